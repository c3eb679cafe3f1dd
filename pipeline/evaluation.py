"""Test-set metrics: loss, accuracy, per-class accuracy and the confusion data DVC plots."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.inference import Normalization, predict


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, classes: list[str], *,
             norm: Normalization, batch_size: int, device: torch.device) -> tuple[dict, np.ndarray]:
    """Metrics for uint8 images (N, H, W) and int64 labels (N,); returns (metrics, predicted labels)."""
    logits = predict(model, torch.from_numpy(images).to(device), norm, batch_size)
    targets = torch.from_numpy(labels).to(device)
    predictions = logits.argmax(1).cpu().numpy()
    hits = predictions == labels
    per_class = {name: float(hits[labels == k].mean()) if (labels == k).any() else None
                 for k, name in enumerate(classes)}
    metrics = {
        "loss": F.cross_entropy(logits, targets).item(),
        "accuracy": float(hits.mean()),
        "num_images": len(labels),
        "per_class_accuracy": per_class,
    }
    return metrics, predictions


def confusion_records(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> list[dict[str, str]]:
    """One {actual, predicted} record per image: the shape DVC's `confusion` template reads."""
    names = np.asarray(classes)
    return [{"actual": a, "predicted": p} for a, p in zip(names[labels].tolist(), names[predictions].tolist())]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (actual, predicted) as an int64 (classes, classes) matrix."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, -1)
