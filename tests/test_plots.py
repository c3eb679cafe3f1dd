"""Figures: valid PNGs, written atomically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_dvclive_tree
from pipeline.history import read_dvclive_history
from pipeline.metrics import calibration_bins
from pipeline.plots import (
    plot_confusion,
    plot_curves,
    plot_embeddings,
    plot_filters,
    plot_models_curves,
    plot_predictions,
    plot_reliability,
    plot_robustness,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = [str(k) for k in range(10)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", ["src.plot", "src.report", "src.data_figures"])
def test_figure_stages_import_no_torch(stage: str) -> None:
    """The figure stages read NumPy arrays and JSON: torch (and sklearn, whose import takes seconds) stay out."""
    probe = f"import sys, {stage}; print(sorted({{'torch', 'sklearn'}} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"{stage} imports {done.stdout.strip()}"


def assert_png(path: Path) -> None:
    """A real PNG of some substance, and nothing else left in its folder (no temporary file)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1024
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_plot_curves(tmp_path: Path) -> None:
    write_dvclive_tree(tmp_path / "live")
    path = tmp_path / "figures" / "curves.png"
    plot_curves(read_dvclive_history(tmp_path / "live"), "synthetic/mlp", path)
    assert_png(path)


def test_plot_confusion(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(20, 50, size=10)) + rng.integers(0, 3, size=(10, 10))
    path = tmp_path / "confusion.png"
    plot_confusion(matrix, CLASSES, "synthetic/mlp: test confusion", path)
    assert_png(path)


@pytest.mark.parametrize("count", [9, 7, 0])
def test_plot_predictions(tmp_path: Path, count: int) -> None:
    """A full and a ragged grid (7 images on 3x3), with confidences; and an empty one (no mistakes)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = np.arange(count) % 10
    predictions = labels.copy()
    predictions[::3] = (predictions[::3] + 1) % 10  # some mistakes, drawn in red
    path = tmp_path / "predictions.png"
    plot_predictions(images, labels, predictions, CLASSES, "synthetic/mlp: test predictions", path,
                     confidence=rng.uniform(0.1, 1.0, count))
    assert_png(path)


def test_plot_reliability(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 500)
    bins = calibration_bins(confidence, rng.uniform(size=500) < confidence, bins=15)
    path = tmp_path / "reliability.png"
    plot_reliability(bins, 0.0123, "synthetic/mlp", path)
    assert_png(path)


@pytest.mark.parametrize("shape", [(6, 1, 5, 5), (4, 3, 3, 3)])
def test_plot_filters(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "filters.png"
    plot_filters(np.random.default_rng(0).normal(size=shape).astype(np.float32), "synthetic/lenet", path)
    assert_png(path)


def test_plot_embeddings(tmp_path: Path) -> None:
    """Two well separated clusters of 30 points stay apart in both projections (drawn, not checked here)."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    features = rng.normal(size=(60, 16)).astype(np.float32) + labels[:, None] * 5
    path = tmp_path / "embedding.png"
    plot_embeddings(features, labels, CLASSES, "synthetic/lenet", path)
    assert_png(path)


def test_plot_models_curves_and_robustness(tmp_path: Path) -> None:
    write_dvclive_tree(tmp_path / "live")
    history = read_dvclive_history(tmp_path / "live")
    plot_models_curves({"mlp": history, "lenet": history}, "synthetic", tmp_path / "curves" / "curves.png")
    assert_png(tmp_path / "curves" / "curves.png")
    curves = {"mlp": {0.0: 0.95, 45.0: 0.6, 90.0: 0.2}, "lenet": {0.0: 0.97, 45.0: 0.7, 90.0: 0.25}}
    plot_robustness(curves, "synthetic", tmp_path / "rotation" / "rotation.png")
    assert_png(tmp_path / "rotation" / "rotation.png")
