"""Last-state checkpoints, so a killed train stage resumes where it stopped and ends as if never stopped.

The checkpoint lives at a path that is not a DVC output (DVC deletes a stage's outputs before running
it, and a `persist` output would turn off the run-cache), is rewritten atomically after an epoch (at
most every `checkpoint_every_s` seconds of params.yaml) and is removed by the stage once its outputs
are written. A fingerprint of everything that shapes the run (model name, its params section with the
precision resolved, seed, device kind, data and split) guards against resuming another run's state.

`TrainState` is what changes as a run trains; its `save` and `load` stand side by side, so the two
stay in step, over the file-level `save_checkpoint` / `load_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.averaging import WeightAverage
from pipeline.config import TrainConfig
from pipeline.io import READ_ERRORS, atomic_file
from pipeline.runtime import brief

log = logging.getLogger(__name__)


def fingerprint(model: str, config: TrainConfig, seed: int, arrays: dict[str, np.ndarray], device: str,
                world_size: int = 1) -> str:
    """SHA-256 of the model name, its params section, the seed, the device kind (pipeline.device.device_kind:
    another kind computes other numbers), the number of training processes and the bytes of the data and
    split arrays."""
    digest = hashlib.sha256(json.dumps({"model": model, "params": config.model_dump(), "seed": seed,
                                        "device": device, "world_size": world_size}, sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (tensors and plain types only) atomically: a kill mid-write keeps the previous one."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, expected: str) -> dict[str, Any] | None:
    """The state saved at `path` if it carries fingerprint `expected`; None (and a log line why) otherwise."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as err:
        log.warning("ignoring checkpoint %s: unreadable (%s); training starts over", path, brief(err))
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != expected:
        log.warning("ignoring checkpoint %s: written for other hyperparameters, seed, device or data", path)
        return None
    return state


@dataclass(frozen=True)
class Checkpointing:
    """Where the last-state checkpoint goes, the fingerprint of the run it belongs to, and how often.

    A checkpoint is written after an epoch once `every_s` seconds of training have passed since the
    last one (0: after every epoch), so a killed run loses at most that much work plus one epoch, and
    short epochs do not pay for a file write each (~12 ms for mlp: a sixth of its mnist-5k epoch)."""

    path: Path
    fingerprint: str
    every_s: float = 0.0


@dataclass
class TrainState:
    """What changes as a run trains: all a killed run needs to go on as if it had never stopped."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # batch order and augmentation draws (dropout draws from torch's global RNG)
    device: torch.device
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # training seconds, as of the last save (a resumed run's clock goes on from there)
    history: list[dict[str, float]] = field(default_factory=list)  # each epoch's metrics, in order
    best_weights: dict[str, torch.Tensor] | None = None  # a copy of the best epoch's model state
    average: WeightAverage | None = None  # the weights' moving average (`ema`), when on: what is validated

    @property
    def evaluated(self) -> nn.Module:
        """The weights validation scores and the run keeps: the moving average when there is one."""
        return self.model if self.average is None else self.average.module

    @property
    def epoch(self) -> int:
        """Epochs done."""
        return len(self.history)

    @property
    def best_epoch(self) -> int:
        """The epoch (1-based) with the lowest validation loss, the first of equals; 0 before any."""
        losses = [metrics["val/loss"] for metrics in self.history]
        return losses.index(min(losses)) + 1 if losses else 0

    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Record an epoch's metrics; copy the evaluated weights if its validation loss is the lowest yet."""
        self.history.append(metrics)
        if self.best_epoch == self.epoch:
            self.best_weights = {key: value.detach().clone() for key, value in self.evaluated.state_dict().items()}

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This process's own RNG states (dropout): torch's on the CPU, and on the CUDA device if it trains there."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def save(self, path: str | os.PathLike, fingerprint: str, ranks: list[dict[str, torch.Tensor]] | None = None) -> None:
        """Write the state, tagged with `fingerprint`, to `path` (atomically: see save_checkpoint); `ranks`: every
        training process's rng_state(), when there are several."""
        rng = {**self.rng_state(), "batches": self.generator.get_state()}
        if ranks is not None:
            rng["ranks"] = ranks
        save_checkpoint(path, {
            "fingerprint": fingerprint, "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng, "history": self.history,
            "best_state": self.best_weights,
            "average": None if self.average is None else self.average.module.state_dict(),
        })

    def load(self, saved: dict[str, Any], rank: int = 0) -> None:
        """Take a state read by load_checkpoint; `rank` picks this process's RNG states from a run of several."""
        self.step, self.elapsed = saved["step"], saved["elapsed"]
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        rng = saved["rng"]["ranks"][rank] if "ranks" in saved["rng"] else saved["rng"]
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(saved["rng"]["batches"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.history, self.best_weights = saved["history"], saved["best_state"]
        if self.average is not None:
            self.average.module.load_state_dict(saved["average"])


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete the checkpoint once the stage's outputs are written."""
    Path(path).unlink(missing_ok=True)
