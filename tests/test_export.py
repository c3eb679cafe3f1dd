"""ONNX export (pipeline/export.py, `python -m src.export`) and predict with the .onnx on onnxruntime alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, one_error, run_module
from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split
from pipeline.export import TOLERANCE, compare, to_onnx
from pipeline.inference import Normalization
from pipeline.models import create_model
from pipeline.models.checkpoint import save_model

# Small versions of every architecture: what the exporter meets does not depend on the widths.
SMALL = {"mlp": {"hidden": [32]}, "lenet": {}, "resnet": {"width": 8, "blocks": 2, "pool_after": [1, 2]},
         "lstm": {"hidden": 16}, "eurnn": {"hidden": 16}}
NOT_EXPORTABLE = {"eurnn"}  # its scan multiplies by a sparse CSR matrix: torch.export cannot trace that


def model_and_meta(name: str, images: np.ndarray) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = create_model(name, (1, 28, 28), 10, **SMALL[name]).eval()
    meta = {"model": name, "arch": SMALL[name], "dataset": "mnist-5k", "classes": [str(d) for d in range(10)],
            "image_shape": [1, 28, 28], "normalization": Normalization.fit(images).to_dict(), "precision": "fp32"}
    return model, meta


@pytest.mark.parametrize("name", list(SMALL))
def test_every_model_exports_and_matches_torch_or_says_why_not(name: str, mnist5k_lenet: Path) -> None:
    """On the whole mnist-5k test set: logits within TOLERANCE, the same classes; or, for a model the
    exporter cannot handle, a ValueError carrying the exporter's message."""
    images = load_parsed(mnist5k_lenet / "parsed").images[load_split(mnist5k_lenet / "split")["test"]]
    model, meta = model_and_meta(name, images)
    if name in NOT_EXPORTABLE:
        with pytest.raises(ValueError, match="TorchExportError: Failed to export the model with torch.export"):
            to_onnx(model, meta)
        return
    check = compare(to_onnx(model, meta), model, meta, images, batch_size=500)
    assert check["images"] == len(images) == 1000
    assert check["max_abs_logit_difference"] <= TOLERANCE and check["class_disagreements"] == 0, check


BLOCK_TORCH = """
import runpy, sys
class NoTorch:  # this machine has no torch: importing it fails
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
sys.argv = ["src.predict", *sys.argv[1:]]
runpy.run_module("src.predict", run_name="__main__")
"""


def test_export_then_predict_without_torch(mnist5k_lenet: Path, tmp_path: Path) -> None:
    onnx_file, report = tmp_path / "lenet.onnx", tmp_path / "check.json"
    done = run_module("src.export", "--weights", mnist5k_lenet / "lenet.pt", "--parsed", mnist5k_lenet / "parsed",
                      "--split", mnist5k_lenet / "split", "--out", onnx_file, "--report", report, timeout=300)
    assert done.returncode == 0, done.stderr
    check = json.loads(report.read_text())
    assert check["images"] == 1000 and check["opset"] == 18 and check["class_disagreements"] == 0
    assert check["max_abs_logit_difference"] <= TOLERANCE

    data, test = load_parsed(mnist5k_lenet / "parsed"), load_split(mnist5k_lenet / "split")["test"]
    folder = tmp_path / "digits"
    folder.mkdir()
    for row in test[:50]:
        Image.fromarray(255 - data.images[row]).convert("RGB").save(folder / f"{row:05d}.jpg", quality=95)
    results = {}
    for weights, no_torch in ((onnx_file, True), (mnist5k_lenet / "lenet.pt", False)):
        args = ["--weights", str(weights), str(folder), "--format", "json"]
        command = [sys.executable, "-c", BLOCK_TORCH, *args] if no_torch else [sys.executable, "-m", "src.predict", *args]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results[weights.suffix] = [(r["file"], r["class"]) for r in json.loads(done.stdout)]
    assert results[".onnx"] == results[".pt"] and len(results[".pt"]) == 50


def test_a_model_the_exporter_cannot_handle_writes_nothing(mnist5k_lenet: Path, tmp_path: Path) -> None:
    images = load_parsed(mnist5k_lenet / "parsed").images
    model, meta = model_and_meta("eurnn", images)
    save_model(tmp_path / "eurnn.pt", model, meta)
    out = tmp_path / "eurnn.onnx"
    done = run_module("src.export", "--weights", tmp_path / "eurnn.pt", "--parsed", mnist5k_lenet / "parsed",
                      "--split", mnist5k_lenet / "split", "--out", out, timeout=300)
    one_error(done.returncode, done.stderr, "mnist-5k/eurnn: the ONNX exporter", "cannot handle this model",
              "no file written", "Failed to export the model with torch.export")
    assert not out.exists()
