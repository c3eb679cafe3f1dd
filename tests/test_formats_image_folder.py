"""Folders of <class>/<image> files (pipeline/data/formats/image_folder.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.formats.image_folder import read_image_folder
from pipeline.data.registry import folder_dataset
from pipeline.runtime import UserError

RNG = np.random.default_rng(3)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 16)) -> None:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            (root / name / f"{n}.png").write_bytes(png_bytes(RNG.integers(0, 256, size, dtype=np.uint8)))


def test_image_folder(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": 3, "ant": 2})
    parsed = read_image_folder(folder_dataset("pets"), tmp_path)
    assert parsed.classes == ("ant", "cat") and parsed.images.shape == (5, 20, 16)
    np.testing.assert_array_equal(parsed.labels, [0, 0, 1, 1, 1])
    assert parsed.official == {}


@pytest.mark.parametrize(("case", "reason"), [
    ("empty class", "ant: no images in this class directory"), ("other size", "b/9.png: 20x16 pixels, expected 16x20"),
    ("loose file", "a file outside any class directory"), ("not an image", "notes.png: not a readable image")])
def test_image_folder_rejects(tmp_path: Path, case: str, reason: str) -> None:
    write_folder(tmp_path, {"a": 2, "b": 2})
    if case == "empty class":
        (tmp_path / "ant").mkdir()
    elif case == "other size":
        (tmp_path / "b" / "9.png").write_bytes(png_bytes(np.zeros((16, 20), np.uint8)))
    elif case == "loose file":
        (tmp_path / "stray.png").write_bytes(b"x")
    else:
        (tmp_path / "a" / "notes.png").write_text("hello")
    with pytest.raises(UserError, match=reason):
        read_image_folder(folder_dataset("x"), tmp_path)
