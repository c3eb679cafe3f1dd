"""fastai's mnist_png.tgz (pipeline/data/formats/png_tgz.py), with the archive members it must refuse."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_formats_image_folder import png_bytes

from pipeline.data.formats.png_tgz import read_png_tgz
from pipeline.data.registry import MNIST_PNG
from pipeline.runtime import UserError

RNG = np.random.default_rng(3)


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_png_tgz(path: Path, per_class: int = 2, edit: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """fastai's layout: mnist_png/training/<label>/<n>.png and mnist_png/testing/<label>/<n>.png."""
    images, labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for directory in ("training", "testing"):
            for label in range(10):
                for n in range(per_class):
                    image = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
                    add_file(tar, f"mnist_png/{directory}/{label}/{n}.png", png_bytes(image))
                    images.append(image)
                    labels.append(label)
        if edit == "rgb":
            add_file(tar, "mnist_png/training/3/rgb.png", png_bytes(np.zeros((28, 28, 3), np.uint8)))
        elif edit == "size":
            add_file(tar, "mnist_png/testing/4/big.png", png_bytes(np.zeros((32, 32), np.uint8)))
        elif edit in ("symlink", "hardlink"):
            info = tarfile.TarInfo("mnist_png/training/1/link.png")
            info.type, info.linkname = (tarfile.SYMTYPE, "/etc/passwd") if edit == "symlink" else (tarfile.LNKTYPE,
                                                                                                   "x")
            tar.addfile(info)
        elif edit in ("absolute", "dotdot"):
            add_file(tar, "/tmp/evil.png" if edit == "absolute" else "mnist_png/../../evil.png", b"x")
        elif edit == "device":
            info = tarfile.TarInfo("mnist_png/training/1/dev")
            info.type = tarfile.CHRTYPE
            tar.addfile(info)
    return np.stack(images), np.array(labels, np.int64)


def test_png_tgz_round_trip(tmp_path: Path) -> None:
    images, labels = write_png_tgz(tmp_path / MNIST_PNG.files[0].name)
    parsed = read_png_tgz(MNIST_PNG, tmp_path)
    np.testing.assert_array_equal(parsed.images, images)
    np.testing.assert_array_equal(parsed.labels, labels)
    assert parsed.official == {"train": (0, 20), "test": (20, 40)}


@pytest.mark.parametrize(("edit", "reason"), [
    ("rgb", r"training/3/rgb.png: image mode RGB, expected 8-bit grayscale"),
    ("size", r"testing/4/big.png: 32x32 pixels, expected 28x28"),
    ("symlink", "is a link"), ("hardlink", "is a link"), ("device", "device or fifo"),
    ("absolute", "would land outside"), ("dotdot", "would land outside")])
def test_png_tgz_rejects(tmp_path: Path, edit: str, reason: str) -> None:
    write_png_tgz(tmp_path / MNIST_PNG.files[0].name, per_class=1, edit=edit)
    with pytest.raises(UserError, match=reason):
        read_png_tgz(MNIST_PNG, tmp_path)
