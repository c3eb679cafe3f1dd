"""amat text (pipeline/data/formats/amat.py): the fast fixed-width path against the reference reader, chunking,
bad rows, and the zip of the two published files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.formats import amat
from pipeline.data.formats.amat_fast import fixed_width_values
from pipeline.data.registry import AMAT_TEST, AMAT_TRAIN_VALID, MNIST_ROT_BACK_IMAGE
from pipeline.runtime import UserError

RNG = np.random.default_rng(3)


def amat_text(pixels: np.ndarray, labels: np.ndarray, fmt: str = "%.18e") -> bytes:
    """Rows of 784 values in [0, 1] then the label, space separated (savetxt layout)."""
    buffer = io.BytesIO()
    np.savetxt(buffer, np.column_stack([pixels, labels]), fmt=fmt)
    return buffer.getvalue()


def amat_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = RNG.random((n, 784))
    pixels[:, :300] = 0.0
    pixels[0, :4] = [1.0, 0.5 / 255, 127.5 / 255 + 1e-9, 254.5 / 255 - 1e-9]  # ends and near-ties
    return pixels, (np.arange(n) % 10).astype(float)


def reference_pixels(pixels: np.ndarray) -> np.ndarray:
    """What a full-precision parse gives: each value as printed, times 255, rounded."""
    printed = np.array([[float(f"{v:.18e}") for v in row] for row in pixels])
    return np.rint(printed * 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["%.18e", "%g"], ids=["fixed-width", "variable-width"])
def test_parse_amat_matches_full_precision(fmt: str) -> None:
    pixels, labels = amat_rows(40)
    got, got_labels = amat.parse_amat(io.BytesIO(amat_text(pixels, labels, fmt)), 40, "t.amat")
    expected = reference_pixels(pixels) if fmt == "%.18e" else np.rint(
        np.array([[float(f"{v:g}") for v in row] for row in pixels]) * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))


def test_fast_path_gives_the_reference_readers_pixels() -> None:
    """amat_fast against general_values (NumPy's reader) on the published layout: the same labels and pixels,
    a near-tie on every row included; and no answer (None) for a layout it does not read."""
    pixels, labels = amat_rows(200)
    pixels[1:, 300] = (np.arange(199) % 255 + 0.5) / 255  # x * 255 on a rounding tie, as printed
    text = amat_text(pixels, labels)
    fast = fixed_width_values(memoryview(text), amat.AMAT_VALUES)
    reference = amat.general_values(memoryview(text), "t.amat", 0)
    np.testing.assert_array_equal(np.rint(fast[:, :-1] * 255), np.rint(reference[:, :-1] * 255))
    np.testing.assert_array_equal(fast[:, -1], reference[:, -1])
    assert fixed_width_values(memoryview(amat_text(pixels, labels, "%g")), amat.AMAT_VALUES) is None
    assert fixed_width_values(memoryview(text.replace(b"e+00", b"E+00", 1)), amat.AMAT_VALUES) is None


def test_parse_amat_chunks_cut_mid_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amat, "AMAT_CHUNK", 7777)  # many chunks, each ending inside a row
    pixels, labels = amat_rows(30)
    got, _ = amat.parse_amat(io.BytesIO(amat_text(pixels, labels)), 30, "t.amat")
    np.testing.assert_array_equal(got, reference_pixels(pixels))


@pytest.mark.parametrize(("case", "reason"), [
    ("short row", "rows have 784 values"), ("pixel 1.5", "row 3: pixel values outside"),
    ("label 10", "row 2: label 10.0 is not one of 0..9"), ("missing rows", "9 rows, expected 10; truncated"),
    ("extra rows", "more than the 9 rows")])
def test_parse_amat_rejects(case: str, reason: str) -> None:
    pixels, labels = amat_rows(10)
    if case == "pixel 1.5":
        pixels[2, 500] = 1.5
    elif case == "label 10":
        labels[1] = 10
    text = amat_text(pixels[:, 1:] if case == "short row" else pixels, labels)
    if case == "missing rows":
        text = text[:text[:-1].rfind(b"\n") + 1]
    rows = 9 if case == "extra rows" else 10
    with pytest.raises(UserError, match=reason):
        amat.parse_amat(io.BytesIO(text), rows, "t.amat")


def write_amat_zip(path: Path, sizes: tuple[int, int], extra: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = amat_rows(sum(sizes))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(AMAT_TRAIN_VALID, amat_text(pixels[:sizes[0]], labels[:sizes[0]]))
        zf.writestr(AMAT_TEST, amat_text(pixels[sizes[0]:], labels[sizes[0]:]))
        if extra:
            zf.writestr(extra, b"x")
    return reference_pixels(pixels).reshape(-1, 28, 28), labels.astype(np.int64)


def test_amat_zip_keeps_official_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amat, "AMAT_SPLIT", (("train", 8), ("val", 2), ("test", 5)))  # small stand-in
    images, labels = write_amat_zip(tmp_path / MNIST_ROT_BACK_IMAGE.files[0].name, (10, 5))
    parsed = amat.read_amat_zip(MNIST_ROT_BACK_IMAGE, tmp_path)
    np.testing.assert_array_equal(parsed.images, images)
    np.testing.assert_array_equal(parsed.labels, labels)
    assert parsed.official == {"train": (0, 8), "val": (8, 10), "test": (10, 15)}


def test_amat_zip_refuses_escaping_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amat, "AMAT_SPLIT", (("train", 8), ("val", 2), ("test", 5)))
    write_amat_zip(tmp_path / MNIST_ROT_BACK_IMAGE.files[0].name, (10, 5), extra="../../evil.sh")
    with pytest.raises(UserError, match="'../../evil.sh' would land outside the target directory"):
        amat.read_amat_zip(MNIST_ROT_BACK_IMAGE, tmp_path)
