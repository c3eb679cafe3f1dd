"""Figures: valid PNGs, written atomically, that draw the data they are given (read back from each
figure's axes and artists before it is saved)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import pipeline.plots
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


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[plt.Figure]:
    """Every figure the plot functions save, in order, kept open for its artists to be read."""
    figures: list[plt.Figure] = []
    save = pipeline.plots._save

    def keep(fig: plt.Figure, path: Path) -> None:
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(pipeline.plots, "_save", keep)
    return figures


def line_data(ax: plt.Axes) -> dict[str, tuple[list[float], list[float]]]:
    """label -> (x, y) of every line on `ax` that has a legend label."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def assert_png(path: Path) -> None:
    """A real PNG of some substance, and nothing else left in its folder (no temporary file)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1024
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_plot_curves(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    write_dvclive_tree(tmp_path / "live")
    path = tmp_path / "figures" / "curves.png"
    history = read_dvclive_history(tmp_path / "live")
    plot_curves(history, "synthetic/mlp", path)
    assert_png(path)
    for ax, metric in zip(drawn[0].axes, ("loss", "accuracy")):
        assert ax.get_ylabel() == metric
        assert line_data(ax) == {subset: (list(history[f"{subset}/{metric}"][0]), list(history[f"{subset}/{metric}"][1]))
                                 for subset in ("train", "val")}


def test_plot_confusion(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(20, 50, size=10)) + rng.integers(0, 3, size=(10, 10))
    matrix[2, 7] = 60  # an off-diagonal cell larger than the diagonal: a transposed matrix would show
    path = tmp_path / "confusion.png"
    plot_confusion(matrix, CLASSES, "synthetic/mlp: test confusion", path)
    assert_png(path)
    ax = drawn[0].axes[0]
    # colour: each actual class's (row's) shares; text: the counts, each in its (actual, predicted) cell
    np.testing.assert_allclose(ax.images[0].get_array(), matrix / matrix.sum(1, keepdims=True))
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert cells == {(i, j): int(count) for (i, j), count in np.ndenumerate(matrix) if count}
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES and ax.get_ylabel() == "actual"
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES and ax.get_xlabel() == "predicted"


@pytest.mark.parametrize("count", [9, 7, 0])
def test_plot_predictions(tmp_path: Path, drawn: list[plt.Figure], count: int) -> None:
    """A full and a ragged grid (7 images on 3x3), with confidences; and an empty one (no mistakes)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = np.arange(count) % 10
    predictions = labels.copy()
    predictions[::3] = (predictions[::3] + 1) % 10  # some mistakes, drawn in red
    path = tmp_path / "predictions.png"
    confidence = rng.uniform(0.1, 1.0, count)
    plot_predictions(images, labels, predictions, CLASSES, "synthetic/mlp: test predictions", path,
                     confidence=confidence)
    assert_png(path)
    shown = [ax for ax in drawn[0].axes if ax.images]
    assert len(shown) == count
    red = plt.matplotlib.colors.to_rgba("tab:red")
    for ax, image, label, predicted, p in zip(shown, images, labels, predictions, confidence):
        np.testing.assert_array_equal(ax.images[0].get_array(), image)
        assert ax.get_title() == f"{CLASSES[label]} → {CLASSES[predicted]}\n{p:.0%}"
        assert (plt.matplotlib.colors.to_rgba(ax.title.get_color()) == red) == (label != predicted)


def test_plot_reliability(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 500)
    bins = calibration_bins(confidence, rng.uniform(size=500) < confidence, bins=15)
    path = tmp_path / "reliability.png"
    plot_reliability(bins, 0.0123, "synthetic/mlp", path)
    assert_png(path)
    top, bottom = drawn[0].axes
    used = bins["count"] > 0
    np.testing.assert_allclose([bar.get_height() for bar in top.patches], bins["accuracy"][used])
    points = line_data(top)["(mean confidence, accuracy)"]
    np.testing.assert_allclose(points, [bins["confidence"][used], bins["accuracy"][used]])
    assert [bar.get_height() for bar in bottom.patches] == list(bins["count"])
    assert "ECE 0.0123" in top.get_title()


@pytest.mark.parametrize("shape", [(6, 1, 5, 5), (4, 3, 3, 3)])
def test_plot_filters(tmp_path: Path, drawn: list[plt.Figure], shape: tuple[int, ...]) -> None:
    path = tmp_path / "filters.png"
    filters = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    plot_filters(filters, "synthetic/lenet", path)
    assert_png(path)
    shown = [ax for ax in drawn[0].axes if ax.images]
    assert len(shown) == shape[0] * shape[1]
    limit = np.abs(filters).max()
    for ax, (o, i) in zip(shown, np.ndindex(*shape[:2])):
        np.testing.assert_array_equal(ax.images[0].get_array(), filters[o, i])
        assert ax.images[0].get_clim() == (-limit, limit)  # one symmetric scale for every kernel


def test_plot_embeddings(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    """Two well separated clusters of 30 points stay apart in both projections, each drawn in its class's colour."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    features = rng.normal(size=(60, 16)).astype(np.float32) + labels[:, None] * 5
    path = tmp_path / "embedding.png"
    plot_embeddings(features, labels, CLASSES, "synthetic/lenet", path)
    assert_png(path)
    for ax in drawn[0].axes[:2]:
        points = {c.get_label(): c.get_offsets() for c in ax.collections if len(c.get_offsets())}
        assert {name: len(p) for name, p in points.items()} == {"0": 30, "1": 30}
        centres = {name: p.mean(0) for name, p in points.items()}
        spread = max(np.linalg.norm(p - centres[name], axis=1).max() for name, p in points.items())
        assert np.linalg.norm(centres["0"] - centres["1"]) > 2 * spread  # apart, and the labels not mixed


def test_plot_models_curves_and_robustness(tmp_path: Path, drawn: list[plt.Figure]) -> None:
    write_dvclive_tree(tmp_path / "live")
    history = read_dvclive_history(tmp_path / "live")
    lenet = {key: (epochs, values * 0.5) for key, (epochs, values) in history.items()}
    plot_models_curves({"mlp": history, "lenet": lenet}, "synthetic", tmp_path / "curves" / "curves.png")
    assert_png(tmp_path / "curves" / "curves.png")
    for ax, metric in zip(drawn[0].axes, ("loss", "accuracy")):
        assert line_data(ax) == {f"{model} {subset}": (list(h[f"{subset}/{metric}"][0]), list(h[f"{subset}/{metric}"][1]))
                                 for model, h in (("mlp", history), ("lenet", lenet)) for subset in ("val", "train")}
    curves = {"mlp": {45.0: 0.6, 0.0: 0.95, 90.0: 0.2}, "lenet": {0.0: 0.97, 45.0: 0.7, 90.0: 0.25}}
    plot_robustness(curves, "synthetic", tmp_path / "rotation" / "rotation.png")
    assert_png(tmp_path / "rotation" / "rotation.png")
    assert line_data(drawn[1].axes[0]) == {"mlp": ([0.0, 45.0, 90.0], [0.95, 0.6, 0.2]),
                                           "lenet": ([0.0, 45.0, 90.0], [0.97, 0.7, 0.25])}
