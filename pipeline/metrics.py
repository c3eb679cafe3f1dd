"""Metrics of predictions, NumPy only: confusion matrix and records, top confusions, calibration bins and
ECE, an even sample of rows. The evaluate stage computes them; the plot stage recomputes them from
saved predictions without importing torch."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (actual, predicted) as an int64 (classes, classes) matrix."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, -1)


def confusion_records(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> list[dict[str, str]]:
    """One {actual, predicted} record per image: the shape DVC's `confusion` template reads."""
    names = np.asarray(classes)
    return [{"actual": a, "predicted": p} for a, p in zip(names[labels].tolist(), names[predictions].tolist())]


def top_confusions(matrix: np.ndarray, classes: list[str], count: int) -> dict[str, dict[str, str | int]]:
    """The `count` most frequent mistakes of a confusion matrix, by rank: {"1": {"pair": "5 -> 8", "count": 5}}.

    Keyed by rank, not by pair, so every run has the same keys and `dvc exp show` the same columns.
    """
    mistakes = matrix * (1 - np.eye(len(matrix), dtype=matrix.dtype))
    order = np.argsort(-mistakes, axis=None, kind="stable")[:count]  # row-major ties: lower classes first
    pairs = [np.unravel_index(flat, mistakes.shape) for flat in order]
    return {str(rank): {"pair": f"{classes[i]} -> {classes[j]}", "count": int(mistakes[i, j])}
            for rank, (i, j) in enumerate(pairs, start=1) if mistakes[i, j] > 0}


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Equal-width confidence bins (b/bins, (b+1)/bins]: image count, mean confidence and accuracy of each."""
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # (N,) bin of each image
    count = np.bincount(which, minlength=bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return {"count": count, "confidence": confidence_sum / np.maximum(count, 1),
            "accuracy": correct_sum / np.maximum(count, 1)}


def expected_calibration_error(bins: dict[str, np.ndarray]) -> float:
    """ECE: the image-weighted mean gap between accuracy and confidence over the bins."""
    return float(np.sum(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"])) / max(bins["count"].sum(), 1))


def evenly_spaced(total: int, count: int) -> np.ndarray:
    """min(count, total) row indices spread evenly over [0, total): a fair sample of a class-sorted set."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).astype(np.int64)) if total else np.zeros(0, np.int64)
