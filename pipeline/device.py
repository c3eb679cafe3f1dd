"""The torch side of a stage's setup: seeding, the device named in params.yaml, and the precision on it."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.runtime import UserError

if TYPE_CHECKING:
    from pipeline.config import TrainConfig

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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 in hardware: a CUDA GPU that reports it (Ampere or later),
    or a CPU with AVX512-BF16 or AMX tiles. Other CPUs emulate bf16 with float32 instructions plus
    conversions, which is slower than float32 itself (torch.ops.mkldnn._is_mkldnn_bf16_supported() is
    true on those too, so it is not the test)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """params.yaml's `precision` -> what trains: "fp32", or "bf16" (bfloat16 autocast).

    `auto` takes bf16 where `device` runs it natively, else fp32; an explicit name is kept as asked."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def for_device(config: TrainConfig, device: torch.device) -> TrainConfig:
    """`config` as it runs on `device`: `precision: auto` resolved (resolve_precision), logged once.

    Callers resolve before fingerprinting the run and training it, so both name the precision that
    runs: a checkpoint written in bf16 on one machine is not resumed in fp32 on another."""
    precision = resolve_precision(config.precision, device)
    if precision == "bf16" and not native_bf16(device):
        log.warning("precision bf16 on %s, which has no native bf16: it runs emulated, slower than fp32", device)
    log.info("precision: %s (params: %s)", precision, config.precision)
    return config.model_copy(update={"precision": precision})
