"""The torch side of a stage's setup: seeding and the device named in params.yaml."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from pipeline.runtime import UserError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed every RNG a stage may touch (Python, NumPy, torch on all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """Map params.yaml's `device` to a torch.device; `auto` prefers cuda, then mps, then cpu."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name == "auto":
        name = next(kind for kind in ("cuda", "mps", "cpu") if available[kind])
    elif not available.get(name, False):
        usable = ", ".join(["auto"] + [kind for kind, ok in available.items() if ok])
        raise UserError(f"device: {name!r} is not available on this machine; usable here: {usable}")
    if name == "cpu":
        # Same params, same numbers: ask for deterministic kernels (cheap on CPU).
        torch.use_deterministic_algorithms(True, warn_only=True)
    log.info("device: %s", name)
    return torch.device(name)
