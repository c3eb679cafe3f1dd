"""Resuming an interrupted run from its checkpoint (with a step budget), and how often checkpoints are written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.data.parsed import ParsedDataset
from pipeline.device import seed_everything
from pipeline.inference import Normalization
from pipeline.models import create_model
from pipeline.resume import fingerprint
from pipeline import resume, training

CPU = torch.device("cpu")
CONFIG = TrainConfig(steps=50, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.9, schedule="onecycle",
                     augment_flip=False, grad_clip=1.0, label_smoothing=0.1,
                     arch={"hidden": [32], "dropout": 0.2})  # 23 steps/epoch


# A resnet with batch norm and dropout, its weights averaged (ema): the average and the BatchNorm
# statistics in it must resume as exactly as the weights.
AVERAGED = CONFIG.model_copy(update={"optimizer": "adam", "lr": 3e-3, "momentum": 0.0, "ema": 0.9, "arch": {
    "width": 8, "blocks": 2, "pool_after": [1, 2], "dropout": 0.2, "hidden": 16}})


def fit(data: ParsedDataset, split: dict[str, np.ndarray], live: Path, config: TrainConfig = CONFIG,
        checkpoint: Path | None = None, every_s: float = 0.0) -> torch.nn.Module:
    seed_everything(0)
    name = "resnet" if "width" in config.arch else "mlp"
    model = create_model(name, data.image_shape, 10, **config.arch)
    ckpt = checkpoint and resume.Checkpointing(checkpoint, fingerprint(name, config, 0, split, "cpu"), every_s)
    training.train(model, data.images, data.labels, split, config, norm=Normalization.fit(data.images),
                   device=CPU, seed=0, live_dir=live, checkpoint=ckpt)
    return model


def history(live: Path) -> dict:
    metrics = json.loads((live / "metrics.json").read_text())
    metrics.pop("train_time_s")
    tsv = {p.relative_to(live).as_posix(): [line.split("\t")[1:] for line in p.read_text().splitlines()]
           for p in sorted(live.rglob("*.tsv"))}  # without the timestamp column
    return {"metrics": metrics, "tsv": tsv}


@pytest.mark.parametrize("config", [CONFIG, AVERAGED], ids=["mlp", "resnet-ema"])
def test_step_budget_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                synthetic: ParsedDataset, synthetic_split: dict[str, np.ndarray],
                                config: TrainConfig) -> None:
    """A run stopped after its 2nd epoch checkpoint and rerun ends with the weights and dvclive logs of a
    run never stopped (the weights' moving average and its BatchNorm statistics too); a checkpoint of other
    settings is ignored."""
    monkeypatch.chdir(tmp_path)
    reference = fit(synthetic, synthetic_split, tmp_path / "reference", config)
    assert len(history(tmp_path / "reference")["tsv"]["plots/metrics/val/loss.tsv"]) == 1 + 3  # 50 steps: 3 epochs

    real_save = resume.save_checkpoint

    def save_then_die(path: Path, state: dict) -> None:
        real_save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after the epoch-2 checkpoint
    monkeypatch.setattr(resume, "save_checkpoint", save_then_die)
    checkpoint = tmp_path / "ckpt" / "mlp.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(synthetic, synthetic_split, tmp_path / "resumed", config, checkpoint=checkpoint)
    monkeypatch.setattr(resume, "save_checkpoint", real_save)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2

    # Other hyperparameters: the checkpoint is not theirs, and is ignored with a reason.
    other = config.model_copy(update={"lr": 0.01})
    with caplog.at_level(logging.WARNING):
        fit(synthetic, synthetic_split, tmp_path / "other", config=other, checkpoint=checkpoint.with_name("x.pt"))
        (checkpoint.parent / "x.pt").write_bytes(checkpoint.read_bytes())
        fresh_other = fit(synthetic, synthetic_split, tmp_path / "other2", config=other,
                          checkpoint=checkpoint.parent / "x.pt")
    assert "written for other hyperparameters" in caplog.text
    assert history(tmp_path / "other") == history(tmp_path / "other2")

    with caplog.at_level(logging.INFO):
        resumed = fit(synthetic, synthetic_split, tmp_path / "resumed", config, checkpoint=checkpoint)
    assert "after epoch 2 of 3" in caplog.text
    assert history(tmp_path / "resumed") == history(tmp_path / "reference")
    for (key, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    assert not any(torch.equal(a, b) for a, b in zip(reference.parameters(), fresh_other.parameters()))


def test_checkpoint_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic: ParsedDataset,
                             synthetic_split: dict[str, np.ndarray]) -> None:
    """every_s=0 saves after every epoch; an interval longer than the run saves nothing."""
    monkeypatch.chdir(tmp_path)
    saved: list[int] = []
    monkeypatch.setattr(resume, "save_checkpoint", lambda path, state: saved.append(state["epoch"]))
    fit(synthetic, synthetic_split, tmp_path / "every", checkpoint=tmp_path / "a.pt", every_s=0.0)
    assert saved == [1, 2, 3]
    fit(synthetic, synthetic_split, tmp_path / "never", checkpoint=tmp_path / "b.pt", every_s=3600.0)
    assert saved == [1, 2, 3]


def test_fingerprint_holds_the_device_kind(synthetic_split: dict[str, np.ndarray]) -> None:
    """A checkpoint written on one kind of device is not resumed on another (other kernels, other numbers)."""
    prints = {kind: fingerprint("mlp", CONFIG, 0, synthetic_split, kind)
              for kind in ("cpu", "mps", "cuda:NVIDIA A100-SXM4-80GB", "cuda:NVIDIA H200")}
    assert len(set(prints.values())) == 4
    assert fingerprint("mlp", CONFIG, 0, synthetic_split, "cpu") == prints["cpu"]
