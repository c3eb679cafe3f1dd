"""Every figure, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.io import atomic_file  # noqa: E402

DPI = 120


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


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
                     title: str, path: Path, confidence: np.ndarray | None = None) -> None:
    """A square grid of images titled 'true -> predicted' (and the confidence, if given), mistakes in red."""
    side = max(math.ceil(math.sqrt(len(images))), 1)
    fig, axes = plt.subplots(side, side, figsize=(1.5 * side, 1.6 * side + 0.3), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image, label, predicted) in enumerate(zip(axes.flat, images, labels, predictions)):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        caption = f"{classes[label]} → {classes[predicted]}"
        if confidence is not None:
            caption += f"\n{confidence[i]:.0%}"
        ax.set_title(caption, fontsize=8 if confidence is not None else 9,
                     color="tab:green" if label == predicted else "tab:red")
    fig.suptitle(f"{title} (true → predicted)")
    _save(fig, path)


def plot_reliability(bins: dict[str, np.ndarray], ece: float, title: str, path: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin (above), images per bin (below)."""
    count, edges = bins["count"], np.linspace(0, 1, len(bins["count"]) + 1)
    width, centres, used = np.diff(edges), (edges[:-1] + edges[1:]) / 2, bins["count"] > 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, height_ratios=[3, 1],
                                      layout="constrained")
    top.bar(centres[used], bins["accuracy"][used], width[used], edgecolor="black", alpha=0.8, label="accuracy")
    top.plot(bins["confidence"][used], bins["accuracy"][used], "o", color="tab:red", markersize=4,
             label="(mean confidence, accuracy)")  # on the diagonal when calibrated
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{title}: reliability (ECE {ece:.4f})")
    top.legend(loc="upper left")
    bottom.bar(centres, count, width, color="gray", edgecolor="black")
    bottom.set(xlabel="confidence (max softmax probability)", ylabel="images", yscale="log")
    _save(fig, path)


def plot_filters(filters: np.ndarray, title: str, path: Path) -> None:
    """First-layer conv kernels (out, in, kH, kW): one row per output channel, blue < 0 < red."""
    out_channels, in_channels = filters.shape[:2]
    limit = float(np.abs(filters).max()) or 1.0  # one symmetric scale: kernels compare with each other
    cols = min(out_channels, 8) if in_channels == 1 else in_channels
    rows = math.ceil(out_channels * in_channels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (o, i) in zip(axes.flat, np.ndindex(out_channels, in_channels)):
        image = ax.imshow(filters[o, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"filter {o}" + (f", in {i}" if in_channels > 1 else ""), fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(f"{title}: first-layer filters")
    _save(fig, path)


def plot_embeddings(features: np.ndarray, labels: np.ndarray, classes: list[str], title: str, path: Path,
                    seed: int = 0) -> None:
    """PCA and t-SNE of penultimate features (n, D), one colour per class."""
    from sklearn.decomposition import PCA  # late: sklearn's import takes seconds and only this figure needs it
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(features) - 1) / 3)  # t-SNE needs perplexity < n
    projections = {
        "PCA": PCA(n_components=2, random_state=seed).fit_transform(features),
        "t-SNE": TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features),
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), layout="constrained")
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (name, points) in zip(axes, projections.items()):
        for k, label in enumerate(classes):
            mine = labels == k
            ax.scatter(points[mine, 0], points[mine, 1], s=6, color=colours(k % colours.N), label=label, alpha=0.7)
        ax.set(title=f"{name} of penultimate features", xticks=[], yticks=[])
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, title="class")
    fig.suptitle(f"{title}: {len(features)} test images, {features.shape[1]} features each")
    _save(fig, path)


def plot_models_curves(histories: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], title: str,
                       path: Path) -> None:
    """Every model's loss and accuracy per epoch on one chart: a colour per model, validation solid, train dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for k, (model, history) in enumerate(histories.items()):
            for subset, style in (("val", "-"), ("train", "--")):
                if f"{subset}/{metric}" in history:
                    epochs, values = history[f"{subset}/{metric}"]
                    ax.plot(epochs, values, style, color=f"C{k}", label=f"{model} {subset}",
                            marker="o" if len(epochs) < 3 else None)  # a one-epoch run is a point, not a line
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_robustness(curves: dict[str, dict[float, float]], title: str, path: Path) -> None:
    """Test accuracy against rotation angle, one curve per model."""
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for model, accuracy in curves.items():
        angles = sorted(accuracy)
        ax.plot(angles, [accuracy[a] for a in angles], marker="o", label=model)
    angles = sorted({a for accuracy in curves.values() for a in accuracy})
    ax.set_xticks(angles)
    ax.set(xlabel="rotation of the test images (degrees)", ylabel="test accuracy", ylim=(0, 1),
           title=f"{title}: rotation robustness")
    ax.grid(alpha=0.3)
    ax.legend()
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
