"""Figures (valid PNGs, written atomically) and the markdown summary report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.plots import plot_confusion, plot_curves, plot_predictions, read_dvclive_history
from pipeline.report import ReportRow, render_summary

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


@pytest.mark.parametrize("count", [9, 7])
def test_plot_predictions(tmp_path: Path, count: int) -> None:
    """A full and a ragged grid (7 images on 3x3)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = np.arange(count) % 10
    predictions = labels.copy()
    predictions[::3] = (predictions[::3] + 1) % 10  # some mistakes, drawn in red
    path = tmp_path / "predictions.png"
    plot_predictions(images, labels, predictions, CLASSES, "synthetic/mlp: test predictions", path)
    assert_png(path)


def row(dataset: str, model: str, accuracy: float) -> ReportRow:
    return ReportRow(dataset, model, test_accuracy=accuracy, test_loss=1 - accuracy, best_epoch=7, epochs=20,
                     train_time_s=12.34)


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of the table's body rows (after the header and its separator)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[1].startswith("|---")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_render_summary_sorted_best_first() -> None:
    rows = [row("mnist-5k", "mlp", 0.95), row("fashion", "lenet", 0.88), row("mnist-5k", "lenet", 0.98126),
            row("fashion", "mlp", 0.91)]
    body = table_rows(render_summary(rows))
    assert len(body) == len(rows)
    assert [(cells[0], cells[1]) for cells in body] == [
        ("fashion", "mlp"), ("fashion", "lenet"), ("mnist-5k", "lenet"), ("mnist-5k", "mlp")]
    assert body[2] == ["mnist-5k", "lenet", "0.9813", "0.0187", "7 / 20", "12.3"]


def test_render_summary_header() -> None:
    markdown = render_summary([row("mnist-5k", "mlp", 0.5)])
    assert markdown.startswith("# Results\n") and markdown.endswith("|\n")
    header = [line for line in markdown.splitlines() if line.startswith("|")][0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "dataset", "model", "test accuracy", "test loss", "best epoch", "train time (s)"]
