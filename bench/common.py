"""Set-up the benchmarks share: the repository root, params.yaml, a parsed dataset with its split and
normalisation (from `dvc repro`'s outputs), a freshly seeded model, `pipeline.training.Training` set up as
the train stage's `train` sets it up, and the line of versions each script prints first."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from bench import ROOT
from pipeline.config import Params, TrainConfig, load_params
from pipeline.data.parsed import ParsedDataset, load_parsed
from pipeline.data.registry import MIRROR_ENV
from pipeline.data.split import load_split
from pipeline.device import seed_everything
from pipeline.inference import Normalization
from pipeline.models import create_model
from pipeline.resume import Checkpointing
from pipeline.training import Training, TrainResult

T = TypeVar("T")


def project_params() -> Params:
    """The repository's params.yaml, validated as every stage validates it."""
    return load_params(ROOT / "params.yaml")


@dataclass(frozen=True)
class Workload:
    """A dataset as the train stage sees it: parsed rows, the split and the training rows' normalisation."""

    data: ParsedDataset
    split: dict[str, np.ndarray]
    norm: Normalization

    @property
    def n_train(self) -> int:
        return len(self.split["train"])


def load_workload(dataset: str) -> Workload:
    """data/parsed/<dataset> and data/split/<dataset>, as `dvc repro` leaves them."""
    data = load_parsed(ROOT / "data" / "parsed" / dataset)
    split = load_split(ROOT / "data" / "split" / dataset)
    return Workload(data, split, Normalization.fit(data.images[split["train"]]))


def seeded_model(name: str, config: TrainConfig, image_shape: tuple[int, int, int], classes: int,
                 seed: int) -> nn.Module:
    """Model `name` with `config.arch`, its weights drawn after seeding every RNG with `seed` (as train does)."""
    seed_everything(seed)
    return create_model(name, image_shape, classes, **config.arch)


def stage_training(model: nn.Module, images: np.ndarray, labels: np.ndarray, split: dict[str, np.ndarray],
                   config: TrainConfig, norm: Normalization, device: torch.device, seed: int, tmp: Path,
                   checkpoint_every_s: float) -> Training:
    """`pipeline.training.Training` as the train stage's `train` sets it up, its resume checkpoint (every
    `checkpoint_every_s` seconds) under `tmp`; `config` with its precision resolved (for_device)."""
    return Training(model, images, labels, split, config, norm=norm, device=device, seed=seed,
                    checkpoint=Checkpointing(tmp / "last.pt", "bench", checkpoint_every_s))


def train_as_stage(model: nn.Module, images: np.ndarray, labels: np.ndarray, split: dict[str, np.ndarray],
                   config: TrainConfig, norm: Normalization, device: torch.device, seed: int, tmp: Path,
                   checkpoint_every_s: float, desc: str) -> TrainResult:
    """`pipeline.training.train` as the train stage calls it: every epoch of `stage_training`, its dvclive
    log under `tmp`."""
    return stage_training(model, images, labels, split, config, norm, device, seed, tmp,
                          checkpoint_every_s).run(tmp / "live", desc)


def timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """(seconds, result) of one call of `fn(*args)`."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def versions() -> str:
    """The torch build and its thread count: the first words of every script's output."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def machine() -> dict[str, Any]:
    """What a figure ran on: CPU model, cores, torch build and threads, and the 1-minute load average when it
    was saved (above the core count: other jobs shared the machine, and times are inflated)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_1min": round(os.getloadavg()[0], 2)}


def save_results(name: str, figures: dict[str, Any]) -> Path:
    """Write one bench run's measured figures to bench/results/<name>.json (git-tracked), with the command
    that reproduces them (its arguments included) and the machine they ran on, so the docs' results page
    (`python -m tools.results_page`) is generated from them."""
    path = ROOT / "bench" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", f"bench.{name}", *sys.argv[1:]])
    if mirror := os.environ.get(MIRROR_ENV):  # where the bench read its data from
        command = f"{MIRROR_ENV}={shlex.quote(mirror)} {command}"
    record = {"command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "figures": figures}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    print(f"figures saved to {path.relative_to(ROOT)}")
    return path
