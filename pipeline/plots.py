"""Every figure, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.io import atomic_file  # noqa: E402

DPI = 120


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def read_dvclive_history(live_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train/loss": (steps, values), ...} from dvclive's plots/metrics/**/*.tsv files."""
    root = Path(live_dir) / "plots" / "metrics"
    history = {}
    for tsv in sorted(root.rglob("*.tsv")):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        name = tsv.relative_to(root).with_suffix("").as_posix()
        key = tsv.stem
        history[name] = (np.array([int(r["step"]) for r in rows]) + 1, np.array([float(r[key]) for r in rows]))
    return history


def plot_curves(history: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path) -> None:
    """Loss and accuracy per epoch, train against validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for subset, style in (("train", "-"), ("val", "--")):
            if f"{subset}/{metric}" in history:
                epochs, values = history[f"{subset}/{metric}"]
                ax.plot(epochs, values, style, marker="o", markersize=3, label=subset)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """Confusion matrix with counts; the colour is the share of each true class (row-normalised)."""
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 1.0 + 0.5 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of actual class")
    _save(fig, path)


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes: list[str],
                     title: str, path: Path) -> None:
    """A square grid of images titled 'true -> predicted', mistakes in red."""
    side = math.ceil(math.sqrt(len(images)))
    fig, axes = plt.subplots(side, side, figsize=(1.5 * side, 1.6 * side + 0.3), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, predicted in zip(axes.flat, images, labels, predictions):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{classes[label]} → {classes[predicted]}", fontsize=9,
                     color="tab:green" if label == predicted else "tab:red")
    fig.suptitle(f"{title} (true → predicted)")
    _save(fig, path)


# ---------------------------------------------------------------- data figures (per dataset)

def plot_samples(images: np.ndarray, labels: np.ndarray, classes: list[str], per_class: int, title: str,
                 path: Path) -> None:
    """One row per class, named on the left: the first `per_class` images of that class in `images`."""
    fig, axes = plt.subplots(len(classes), per_class, figsize=(0.9 * per_class + 1.2, 0.9 * len(classes) + 0.4),
                             squeeze=False, layout="constrained")
    for row, name in enumerate(classes):
        shown = images[labels == row][:per_class]
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if col < len(shown):
                ax.imshow(shown[col], cmap="gray_r", vmin=0, vmax=255)
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title)
    _save(fig, path)


def plot_label_histogram(counts: dict[str, np.ndarray], classes: list[str], title: str, path: Path) -> None:
    """Images per class, one group of bars per class and one bar per split (train / val / test)."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(classes) + 2), 3.8), layout="constrained")
    width = 0.8 / len(counts)
    for i, (subset, per_class) in enumerate(counts.items()):
        ax.bar(np.arange(len(classes)) + (i - (len(counts) - 1) / 2) * width, per_class, width,
               label=f"{subset} ({per_class.sum():,})")
    ax.set_xticks(np.arange(len(classes)), classes, rotation=30 if max(map(len, classes)) > 3 else 0, ha="right"
                  if max(map(len, classes)) > 3 else "center")
    ax.set(ylabel="images", title=title)
    ax.set_ylim(top=1.25 * max(c.max() for c in counts.values()))  # headroom for the legend
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=len(counts))
    _save(fig, path)
