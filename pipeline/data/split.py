"""Stratified, seeded train / val / test index sets; an official partition is kept as published."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import atomic_dir, reading
from pipeline.runtime import UserError

SUBSETS = ("train", "val", "test")


def make_split(labels: np.ndarray, official: dict[str, tuple[int, int]], val_fraction: float,
               test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Row indices per subset. Subsets the dataset publishes are kept as published; missing ones
    are drawn from the training pool, stratified by label: test (test_fraction of the pool), then
    val (val_fraction of what is left); the rest is train."""
    split = {subset: np.arange(*official[subset]) for subset in SUBSETS if subset in official}
    pool = split.pop("train", None)
    if pool is None:  # no official train rows: everything not published as val or test
        pool = np.setdiff1d(np.arange(len(labels)), np.concatenate([np.zeros(0, np.int64), *split.values()]))
    rng = np.random.default_rng(seed)
    for subset, fraction in (("test", test_fraction), ("val", val_fraction)):
        if subset not in split:
            pool, split[subset] = _stratified_draw(pool, labels, fraction, rng)
    split["train"] = pool
    _refuse_empty(split, official, len(labels))
    return {subset: np.sort(split[subset]).astype(np.int64) for subset in SUBSETS}


def _refuse_empty(split: dict[str, np.ndarray], official: dict[str, tuple[int, int]], total: int) -> None:
    """A UserError naming the empty subset, what each subset would get, and the setting to change."""
    empty = next((subset for subset in SUBSETS if len(split[subset]) == 0), None)
    if empty is None:
        return
    counts = ", ".join(f"{subset} {len(split[subset])}" for subset in SUBSETS)
    if empty in official:
        fix = "the dataset publishes it empty"
    elif empty == "train":
        fix = "lower split.val_fraction or split.test_fraction"
    else:
        fix = f"raise split.{empty}_fraction, or add images (every subset needs at least one)"
    raise UserError(f"split: this partition leaves {empty} empty ({counts} of {total} images); {fix}")


def _stratified_draw(pool: np.ndarray, labels: np.ndarray, fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split `pool` into (kept, drawn): `fraction` of each class's rows drawn at random."""
    drawn = []
    for label in np.unique(labels[pool]):
        members = rng.permutation(pool[labels[pool] == label])
        drawn.append(members[:round(fraction * len(members))])
    drawn = np.concatenate(drawn) if drawn else np.zeros(0, np.int64)
    return np.setdiff1d(pool, drawn), drawn


def save_split(split: dict[str, np.ndarray], out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        for subset in SUBSETS:
            np.save(tmp / f"{subset}.npy", split[subset])


def load_split(in_dir: Path) -> dict[str, np.ndarray]:
    with reading(in_dir, "split"):
        return {subset: np.load(Path(in_dir) / f"{subset}.npy", allow_pickle=False) for subset in SUBSETS}
