"""What every reader returns (Parsed) and the checks and joins the readers share."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.data.registry import DatasetSpec
from pipeline.runtime import UserError


class Parsed(NamedTuple):
    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 (N,)
    official: dict[str, tuple[int, int]]  # subset -> [start, stop) rows, as published
    classes: tuple[str, ...]
    conversion: dict[str, object] | None = None  # what pipeline.data.convert did (converted image folders only)


def check_arrays(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray, source: str,
                 num_classes: int | None = None) -> None:
    """Structural checks every format shares: shapes agree, labels name a class."""
    num_classes = num_classes or len(spec.classes)
    if images.ndim != 3 or (spec.image_size and images.shape[1:] != spec.image_size):
        expected = f"(N, {spec.image_size[0]}, {spec.image_size[1]})" if spec.image_size else "(N, H, W)"
        raise UserError(f"{source}: images have shape {images.shape}, expected {expected}")
    if len(images) != len(labels):
        raise UserError(f"{source}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{source}: labels span {labels.min()}..{labels.max()}, valid 0..{num_classes - 1}")


def concatenate(spec: DatasetSpec, parts: list[tuple[str, np.ndarray, np.ndarray]]) -> Parsed:
    """Join (subset, images, labels) parts in order; each part becomes an official row range."""
    official, start = {}, 0
    for subset, _, labels in parts:
        official[subset] = (start, start + len(labels))
        start += len(labels)
    images = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    labels = np.concatenate([p[2] for p in parts]) if len(parts) > 1 else parts[0][2]
    return Parsed(images, labels.astype(np.int64, copy=False), official, spec.classes)
