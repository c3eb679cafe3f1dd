"""Last-state checkpoints, so a killed train stage resumes where it stopped and ends as if never stopped.

The checkpoint lives at a path that is not a DVC output (DVC deletes a stage's outputs before running
it, and a `persist` output would turn off the run-cache), is rewritten atomically after an epoch (at
most every `checkpoint_every_s` seconds of params.yaml) and is removed by the stage once its outputs
are written. A fingerprint of everything that shapes the run (model name, its params section, seed,
data and split) guards against resuming another run's state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.io import READ_ERRORS, atomic_file
from pipeline.runtime import brief

log = logging.getLogger(__name__)


def fingerprint(model: str, config: TrainConfig, seed: int, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the model name, its params section, the seed and the bytes of the data and split arrays."""
    digest = hashlib.sha256(json.dumps({"model": model, "params": config.model_dump(), "seed": seed},
                                       sort_keys=True).encode())
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
        log.warning("ignoring checkpoint %s: written for other hyperparameters, seed or data", path)
        return None
    return state


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete the checkpoint once the stage's outputs are written."""
    Path(path).unlink(missing_ok=True)
