"""Figures (valid PNGs, written atomically) and the markdown summary report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import HEADLINE_ROTATION
from pipeline.evaluation import calibration_bins
from pipeline.plots import (
    plot_confusion,
    plot_curves,
    plot_embeddings,
    plot_filters,
    plot_models_curves,
    plot_predictions,
    plot_reliability,
    plot_robustness,
    read_dvclive_history,
)
from pipeline.report import ReportRow, curve_rows, render_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = [str(k) for k in range(10)]


def assert_png(path: Path) -> None:
    """A real PNG of some substance, and nothing else left in its folder (no temporary file)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1024
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def write_dvclive_tree(live_dir: Path, epochs: int = 4) -> None:
    """plots/metrics/{train,val}/{loss,accuracy}.tsv as dvclive writes them: timestamp, step, value."""
    for subset, offset in (("train", 0.0), ("val", 0.1)):
        folder = live_dir / "plots" / "metrics" / subset
        folder.mkdir(parents=True)
        for metric in ("loss", "accuracy"):
            values = [(1 / (step + 1) if metric == "loss" else 0.5 + 0.1 * step) + offset for step in range(epochs)]
            rows = [f"{1700000000000 + step}\t{step}\t{value}" for step, value in enumerate(values)]
            (folder / f"{metric}.tsv").write_text("\n".join([f"timestamp\tstep\t{metric}", *rows]) + "\n")


def test_read_dvclive_history(tmp_path: Path) -> None:
    write_dvclive_tree(tmp_path, epochs=4)
    history = read_dvclive_history(tmp_path)
    assert set(history) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy"}
    epochs, values = history["val/accuracy"]
    np.testing.assert_array_equal(epochs, [1, 2, 3, 4])  # dvclive's step 0 is epoch 1
    np.testing.assert_allclose(values, [0.6, 0.7, 0.8, 0.9])


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


def test_curve_rows(tmp_path: Path) -> None:
    write_dvclive_tree(tmp_path / "live", epochs=3)
    history = read_dvclive_history(tmp_path / "live")
    rows = curve_rows({"synthetic/mlp": history, "synthetic/lenet": history})
    assert len(rows) == 6
    assert rows[0] == {"series": "synthetic/mlp", "epoch": 1, "train_accuracy": 0.5, "train_loss": 1.0,
                       "val_accuracy": 0.6, "val_loss": 1.1}
    assert [row["epoch"] for row in rows] == [1, 2, 3, 1, 2, 3]


def row(dataset: str, model: str, accuracy: float, rotated: float | None = 0.5) -> ReportRow:
    return ReportRow(dataset, model, test_accuracy=accuracy, test_loss=1 - accuracy, ece=0.01234,
                     rotated_accuracy=rotated, num_parameters=44426, best_epoch=7, epochs=20)


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of the table's body rows (after the header and its separator)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[1].startswith("|---")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_render_summary_sorted_best_first() -> None:
    rows = [row("mnist-5k", "mlp", 0.95), row("fashion", "lenet", 0.88), row("mnist-5k", "lenet", 0.98126, None),
            row("fashion", "mlp", 0.91)]
    body = table_rows(render_summary(rows, {}))
    assert len(body) == len(rows)
    assert [(cells[0], cells[1]) for cells in body] == [
        ("fashion", "mlp"), ("fashion", "lenet"), ("mnist-5k", "lenet"), ("mnist-5k", "mlp")]
    assert body[2] == ["mnist-5k", "lenet", "0.9813", "0.0187", "0.0123", "–", "44,426", "7 / 20"]
    assert body[3][5] == "0.5000"


def test_render_summary_header_and_figures() -> None:
    markdown = render_summary([row("mnist-5k", "mlp", 0.5)],
                              {"mnist-5k": [("rotation robustness", "figures/mnist-5k-rotation.png")]})
    assert markdown.startswith("# Results\n")
    header = [line for line in markdown.splitlines() if line.startswith("|")][0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "dataset", "model", "test accuracy", "test loss", "ECE", f"accuracy at {HEADLINE_ROTATION}°", "parameters",
        "best epoch"]
    assert "![rotation robustness](figures/mnist-5k-rotation.png)" in markdown
    assert "[mlp](../results/mnist-5k/mlp/figures/)" in markdown
