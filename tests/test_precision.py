"""`precision: auto | fp32 | tf32 | bf16`: what auto resolves to on each device kind, fp32 as IEEE float32 and
deterministic kernels on CUDA (the settings, checked without a GPU), and bf16 runs that repeat exactly on
one machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.data.parsed import ParsedDataset, save_parsed
from pipeline.data.split import save_split
from pipeline.device import for_device, native_bf16, resolve_device, resolve_precision, seed_everything
from pipeline.inference import Normalization
from pipeline.models import create_model
from pipeline.runtime import UserError
from pipeline.training import Training, train

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not native_bf16(CPU), reason="this CPU has neither AVX512-BF16 nor AMX: "
                                "bf16 would run emulated, and its determinism is not what the pipeline promises")
LENET = {"channels": [4, 8], "hidden": [32], "dropout": 0.1}  # convolutions and dense layers both autocast


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [
    (True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32"),
])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"  # as asked


def bf16_everywhere(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Make the CPU and CUDA report native bf16; returns the including_emulation of each CUDA query."""
    asked: list[bool] = []
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation)
                        or True)
    return asked


def test_auto_on_mps_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even where this machine's CPU and GPU would take bf16, an MPS device gets fp32."""
    bf16_everywhere(monkeypatch)
    assert resolve_precision("auto", CPU) == "bf16"  # the patch works: not fp32 because this CPU lacks bf16
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cuda_asks_for_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """CUDA takes bf16 where the GPU multiplies bf16 in hardware (emulation not counted), whatever the CPU has."""
    asked = bf16_everywhere(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or (native or including_emulation))
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp32")
    assert asked == [False]


@pytest.fixture
def cuda_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Process-wide CUDA settings put back after the test; TF32 allowed and cuDNN benchmarking on, as a
    careless default would leave them; no CUBLAS_WORKSPACE_CONFIG."""
    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.allow_tf32 = "tf32", True
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.allow_tf32 = saved


def fp32_modes() -> list[str]:
    """TF32 for matmuls and for cuDNN (convolutions and RNNs), read as torch.export reads them (it raises on
    flags it cannot reconcile)."""
    return [torch.backends.cuda.matmul.fp32_precision, "tf32" if torch._C._get_cudnn_allow_tf32() else "ieee"]


@pytest.mark.usefixtures("cuda_settings")
def test_cuda_runs_ieee_fp32_and_deterministic_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """device: cuda turns TF32 off (fp32 means fp32), asks for deterministic kernels with the cuBLAS
    workspace they need, and stops cuDNN benchmarking; precision tf32 turns TF32 on, for CUDA only."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = resolve_device("cuda")
    assert device.type == "cuda" and fp32_modes() == ["ieee"] * 2
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled()
    config = TrainConfig(steps=1, batch_size=16, optimizer="adam", lr=3e-3, precision="tf32")
    assert for_device(config, device).precision == "tf32" and fp32_modes() == ["tf32"] * 2
    assert for_device(config.model_copy(update={"precision": "fp32"}), device).precision == "fp32"
    assert fp32_modes() == ["ieee"] * 2
    with pytest.raises(UserError, match="precision tf32: TF32 is a mode of CUDA GPUs .* not of cpu"):
        for_device(config, CPU)


def test_training_takes_a_resolved_precision(synthetic: ParsedDataset, synthetic_split: dict[str, np.ndarray]) -> None:
    config = TrainConfig(steps=1, batch_size=16, optimizer="adam", lr=3e-3, precision="auto")
    model = create_model("mlp", synthetic.image_shape, 10)
    with pytest.raises(ValueError, match="precision 'auto': resolve it first"):
        Training(model, synthetic.images, synthetic.labels, synthetic_split, config,
                 norm=Normalization.fit(synthetic.images), device=CPU, seed=0)
    assert for_device(config, CPU).precision == resolve_precision("auto", CPU)


def fit(data: ParsedDataset, split: dict[str, np.ndarray], live: Path, precision: str) -> torch.nn.Module:
    config = TrainConfig(steps=40, batch_size=16, optimizer="adam", lr=3e-3, precision=precision, augment_flip=False,
                         arch=LENET)
    seed_everything(0)
    model = create_model("lenet", data.image_shape, 10, **config.arch)
    train(model, data.images, data.labels, split, for_device(config, CPU), norm=Normalization.fit(data.images),
          device=CPU, seed=0, live_dir=live)
    return model


@needs_bf16
def test_bf16_repeats_exactly_and_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              synthetic: ParsedDataset, synthetic_split: dict[str, np.ndarray]) -> None:
    monkeypatch.chdir(tmp_path)
    runs = {name: fit(synthetic, synthetic_split, tmp_path / name, precision)
            for name, precision in (("a", "bf16"), ("b", "auto"), ("fp32", "fp32"))}
    for key, a in runs["a"].state_dict().items():
        assert torch.equal(a, runs["b"].state_dict()[key]), key
    # autocast really ran: bf16 rounding moved the weights away from the fp32 run's
    assert not torch.equal(runs["a"].head.weight, runs["fp32"].head.weight)
    summaries = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in runs}
    assert [summaries[name]["precision"] for name in runs] == ["bf16", "bf16", "fp32"]


@needs_bf16
def test_bf16_killed_and_resumed_equals_uninterrupted(tmp_path: Path, params: dict[str, Any],
                                                      write_params: Callable[[dict[str, Any]], Path],
                                                      synthetic: ParsedDataset,
                                                      synthetic_split: dict[str, np.ndarray]) -> None:
    """SIGKILL the train stage after an epoch checkpoint; a rerun resumes it and writes the same weights,
    byte for byte, as a run never stopped."""
    save_parsed(synthetic, tmp_path / "parsed")
    save_split(synthetic_split, tmp_path / "split")
    params.update(device="cpu", checkpoint_every_s=0.0)
    params["models"]["lenet"] = {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 3e-3,
                                 "precision": "bf16", "arch": LENET}
    params_file = write_params(params)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def command(out: str, checkpoint: Path | None = None) -> list[str]:
        extra = ["--checkpoint", str(checkpoint)] if checkpoint else []
        return [sys.executable, "-m", "src.train", "--model", "lenet", "--parsed", str(tmp_path / "parsed"),
                "--split", str(tmp_path / "split"), "--out", str(tmp_path / f"{out}.pt"),
                "--live", str(tmp_path / out), "--params", str(params_file), *extra]

    checkpoint = tmp_path / "ckpt" / "lenet.pt"
    killed = subprocess.Popen(command("resumed", checkpoint), cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stopped_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= stopped_at < 10

    resumed = subprocess.run(command("resumed", checkpoint), cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {stopped_at} of 10" in resumed.stderr and "precision: bf16" in resumed.stderr
    subprocess.run(command("uninterrupted"), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    assert (tmp_path / "resumed.pt").read_bytes() == (tmp_path / "uninterrupted.pt").read_bytes()
    meta = torch.load(tmp_path / "resumed.pt", weights_only=True)["meta"]
    assert meta["precision"] == "bf16"
