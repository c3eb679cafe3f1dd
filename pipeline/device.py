"""The torch side of a stage's setup: seeding, the device named in params.yaml, and the precision on it."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
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
    if name == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; read when cuBLAS starts, so set before any matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False  # benchmarking may pick another convolution kernel each run
    # Same params, same numbers: deterministic kernels (warn_only: an op that has none warns, not fails).
    torch.use_deterministic_algorithms(True, warn_only=True)
    set_tf32(False)  # fp32 means IEEE float32 (PyTorch lets cuDNN convolutions use TF32 by default)
    log.info("device: %s", name)
    return torch.device(name)


def set_tf32(enabled: bool) -> None:
    """Let float32 matmuls, convolutions and RNNs on CUDA run on TF32 tensor cores (10-bit mantissa), or not.
    Process-wide; no effect on other devices."""
    torch.backends.cuda.matmul.fp32_precision = "tf32" if enabled else "ieee"
    # cuDNN through its older switch: with the newer per-operator "ieee" set, torch's own cuDNN flag reader
    # (torch.export calls it) raises, so an ONNX export in the same process would fail.
    torch.backends.cudnn.allow_tf32 = enabled


def device_kind(device: torch.device) -> str:
    """What kind of device computes: "cpu", "mps" or "cuda:<GPU name>" (numbers differ between GPU models)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


@contextmanager
def out_of_memory_as_error(setting: str) -> Iterator[None]:
    """Turn the device running out of memory into one UserError line naming `setting` ("models.x.batch_size: 512")."""
    try:
        yield
    except RuntimeError as err:  # torch.OutOfMemoryError on CUDA; a RuntimeError saying so on MPS
        if not isinstance(err, torch.OutOfMemoryError) and "out of memory" not in str(err):
            raise
        raise UserError(f"the device ran out of memory at {setting}; lower it in params.yaml") from None


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
    """params.yaml's `precision` -> what trains: "fp32", "tf32" (CUDA's TF32 tensor cores for float32) or
    "bf16" (bfloat16 autocast).

    `auto` takes bf16 where `device` runs it natively, else fp32; an explicit name is kept as asked."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def for_device(config: TrainConfig, device: torch.device) -> TrainConfig:
    """`config` as it runs on `device`: `precision: auto` resolved (resolve_precision), TF32 on only for
    `precision: tf32` (CUDA only), logged once.

    Callers resolve before fingerprinting the run and training it, so both name the precision that
    runs: a checkpoint written in bf16 on one machine is not resumed in fp32 on another."""
    precision = resolve_precision(config.precision, device)
    if precision == "tf32" and device.type != "cuda":
        raise UserError(f"precision tf32: TF32 is a mode of CUDA GPUs (Ampere or later), not of {device.type}; "
                        "use fp32, bf16 or auto")
    set_tf32(precision == "tf32")
    if precision == "bf16" and not native_bf16(device):
        log.warning("precision bf16 on %s, which has no native bf16: it runs emulated, slower than fp32", device)
    log.info("precision: %s (params: %s)", precision, config.precision)
    return config.model_copy(update={"precision": precision})
