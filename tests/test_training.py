"""The training loop: seeded, best-by-val-loss, dvclive logging, and learning above chance."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TrainConfig
from pipeline.data.parsed import ParsedDataset
from pipeline.device import seed_everything
from pipeline.evaluation import evaluate
from pipeline.history import read_dvclive_history
from pipeline.inference import Normalization, predict
from pipeline.models import create_model
from pipeline.training import Training, TrainResult, train

CPU = torch.device("cpu")
EPOCHS = 3
CONFIG = TrainConfig(epochs=EPOCHS, batch_size=16, optimizer="adam", lr=3e-3, augment_flip=False,
                     arch={"hidden": [32], "dropout": 0.1})


@dataclass
class Run:
    model: nn.Module
    result: TrainResult
    live_dir: Path
    norm: Normalization


def fit(data: ParsedDataset, split: dict[str, np.ndarray], live_dir: Path, seed: int,
        labels: np.ndarray | None = None) -> Run:
    """What the train stage does: seed, build the model, train it on the split."""
    norm = Normalization.fit(data.images[split["train"]])
    seed_everything(seed)
    model = create_model("mlp", data.image_shape, len(data.classes), **CONFIG.arch)
    result = train(model, data.images, data.labels if labels is None else labels, split, CONFIG, norm=norm,
                   device=CPU, seed=seed, live_dir=live_dir)
    return Run(model, result, live_dir, norm)


def read_tsv(path: Path) -> list[float]:
    """The values column of a dvclive plots/metrics tsv, in step order."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [int(row["step"]) for row in rows] == list(range(len(rows)))
    return [float(row[path.stem]) for row in rows]


def val_loss(run: Run, images: np.ndarray, labels: np.ndarray) -> float:
    logits = predict(run.model, torch.from_numpy(images), run.norm, batch_size=64)
    return F.cross_entropy(logits, torch.from_numpy(labels)).item()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh directory that is also the working directory, so a stray dvc.yaml would land in it."""
    root = tmp_path_factory.mktemp("training")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        yield root


@pytest.fixture(scope="module")
def runs(work_dir: Path, synthetic: ParsedDataset, synthetic_split: dict[str, np.ndarray]) -> dict[str, Run]:
    """Three runs: "a" and "b" with seed 0, "c" with seed 1."""
    return {name: fit(synthetic, synthetic_split, work_dir / name, seed)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}


def test_same_seed_same_run(runs: dict[str, Run]) -> None:
    metrics = [json.loads((runs[name].live_dir / "metrics.json").read_text()) for name in "ab"]
    for run_metrics in metrics:
        assert run_metrics.pop("train_time_s") > 0  # wall time: the one value allowed to differ
    assert metrics[0] == metrics[1]
    a, b = runs["a"].model.state_dict(), runs["b"].model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_other_seed_other_weights(runs: dict[str, Run]) -> None:
    a, c = runs["a"].model.state_dict(), runs["c"].model.state_dict()
    assert not any(torch.equal(a[key], c[key]) for key in a if key.endswith("weight"))


def test_best_epoch_is_min_val_loss(runs: dict[str, Run], synthetic: ParsedDataset,
                                    synthetic_split: dict[str, np.ndarray]) -> None:
    run = runs["a"]
    losses = read_tsv(run.live_dir / "plots" / "metrics" / "val" / "loss.tsv")
    assert len(losses) == EPOCHS
    assert run.result.best_epoch == int(np.argmin(losses)) + 1
    assert run.result.best_val_loss == pytest.approx(min(losses), abs=1e-6)
    val = synthetic_split["val"]
    assert val_loss(run, synthetic.images[val], synthetic.labels[val]) == pytest.approx(run.result.best_val_loss,
                                                                                        abs=1e-6)
    summary = json.loads((run.live_dir / "metrics.json").read_text())
    assert summary == {"best_epoch": run.result.best_epoch, "precision": "fp32",
                       "train_time_s": run.result.train_time_s, "step": EPOCHS - 1}  # dvclive's: the epoch index


def test_best_weights_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic: ParsedDataset,
                               synthetic_split: dict[str, np.ndarray]) -> None:
    """With val labels shifted by one class, val loss grows as the model learns: the best epoch is an
    early one, and the weights left in the model are that epoch's, not the last epoch's."""
    monkeypatch.chdir(tmp_path)
    val = synthetic_split["val"]
    labels = synthetic.labels.copy()
    labels[val] = (labels[val] + 1) % len(synthetic.classes)
    run = fit(synthetic, synthetic_split, tmp_path / "live", seed=0, labels=labels)
    losses = read_tsv(run.live_dir / "plots" / "metrics" / "val" / "loss.tsv")
    assert run.result.best_epoch == int(np.argmin(losses)) + 1 < EPOCHS
    final = val_loss(run, synthetic.images[val], labels[val])
    assert final == pytest.approx(run.result.best_val_loss, abs=1e-6)
    assert final < losses[-1] - 1e-3


def test_epoch_by_epoch(runs: dict[str, Run], work_dir: Path, synthetic: ParsedDataset,
                       synthetic_split: dict[str, np.ndarray]) -> None:
    """Training.epochs, what train() runs, yields once an epoch with the model holding that epoch's weights;
    once done, the model holds the best epoch's, the same as train() leaves them."""
    seed_everything(0)
    model = create_model("mlp", synthetic.image_shape, len(synthetic.classes), **CONFIG.arch)
    run = Training(model, synthetic.images, synthetic.labels, synthetic_split, CONFIG, norm=runs["a"].norm,
                   device=CPU, seed=0)
    weights = {epoch: {key: value.clone() for key, value in model.state_dict().items()}
               for epoch in run.epochs(work_dir / "by-epoch")}
    assert list(weights) == list(range(1, EPOCHS + 1))
    assert run.result == replace(runs["a"].result, train_time_s=run.result.train_time_s)
    best = weights[run.result.best_epoch]
    for key, value in runs["a"].model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value) and torch.equal(best[key], value), key
    assert any(not torch.equal(weights[1][key], weights[EPOCHS][key]) for key in best)


def test_learns_above_chance(runs: dict[str, Run], synthetic: ParsedDataset,
                             synthetic_split: dict[str, np.ndarray]) -> None:
    assert runs["a"].result.best_val_accuracy > 0.5
    test = synthetic_split["test"]
    metrics, _, _ = evaluate(runs["a"].model, synthetic.images[test], synthetic.labels[test], synthetic.classes,
                             norm=runs["a"].norm, batch_size=32, device=CPU)
    assert metrics["accuracy"] > 0.5  # chance is 0.1


def test_dvclive_files(runs: dict[str, Run], work_dir: Path) -> None:
    """dvclive writes the metric histories and metrics.json, and no dvc.yaml (dvc.yaml owns the plots)."""
    live_dir = runs["a"].live_dir
    for subset in ("train", "val"):
        for metric in ("loss", "accuracy"):
            values = read_tsv(live_dir / "plots" / "metrics" / subset / f"{metric}.tsv")
            assert len(values) == EPOCHS and all(np.isfinite(values))
    train_accuracy = read_tsv(live_dir / "plots" / "metrics" / "train" / "accuracy.tsv")
    assert all(0 <= value <= 1 for value in train_accuracy)
    assert (live_dir / "metrics.json").is_file()
    history = read_dvclive_history(live_dir)  # the plot stage's reader understands what dvclive wrote
    assert set(history) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy"}
    np.testing.assert_array_equal(history["val/loss"][0], np.arange(1, EPOCHS + 1))
    assert list(work_dir.rglob("dvc.yaml")) == []
    assert list(work_dir.rglob("*.html")) == []  # report=None: no dvclive report either


def test_validation_uses_neither_label_smoothing_nor_augmentation(synthetic: ParsedDataset,
                                                                 synthetic_split: dict[str, np.ndarray]) -> None:
    """Validation loss is plain cross-entropy of the unaugmented validation images, whatever the training
    loss and augmentation are: runs that differ only in those compare (and pick their best epoch) alike."""
    norm = Normalization.fit(synthetic.images[synthetic_split["train"]])
    seed_everything(0)
    model = create_model("mlp", synthetic.image_shape, 10, **CONFIG.arch)
    tricks = replace_config(label_smoothing=0.4, augment_rotation=30.0, augment_shift=3, augment_flip=True)
    scores = [Training(model, synthetic.images, synthetic.labels, synthetic_split, config, norm=norm,
                       device=CPU, seed=0).validate() for config in (CONFIG, tricks)]
    val = synthetic_split["val"]
    logits = predict(model, torch.from_numpy(synthetic.images[val]), norm, batch_size=64)
    expected = {"val/loss": F.cross_entropy(logits, torch.from_numpy(synthetic.labels[val])).item(),
                "val/accuracy": (logits.argmax(1).numpy() == synthetic.labels[val]).mean()}
    for score in scores:
        assert score["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6)
        assert score["val/accuracy"] == pytest.approx(expected["val/accuracy"])
    assert scores[0] == scores[1]


def replace_config(**changes: object) -> TrainConfig:
    return TrainConfig(**{**CONFIG.model_dump(), **changes})
