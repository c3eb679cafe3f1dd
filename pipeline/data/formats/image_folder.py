"""Folders of <class>/<image> files (user folders), and the image decoding the png-tgz reader shares."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pipeline.data.formats.base import Parsed
from pipeline.data.registry import DatasetSpec
from pipeline.runtime import UserError, brief


def decode_image(data: bytes, name: str, size: tuple[int, int] | None) -> np.ndarray:
    """One grayscale image file -> uint8 (H, W); a wrong mode or size is a UserError naming the file."""
    from PIL import Image, UnidentifiedImageError  # imported here: only image folders need Pillow

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode, array = image.mode, np.asarray(image)
    except UnidentifiedImageError:
        raise UserError(f"{name}: not a readable image (no image format Pillow knows; empty, truncated or "
                        "another kind of file)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{name}: not a readable image ({brief(err)})") from None
    if mode != "L":
        raise UserError(f"{name}: image mode {mode}, expected 8-bit grayscale (L); convert the folder to grayscale")
    if size and array.shape != size:
        raise UserError(f"{name}: {array.shape[1]}x{array.shape[0]} pixels, expected {size[1]}x{size[0]} "
                        "like the other images")
    return array.astype(np.uint8, copy=False)


def decode_classes(files: dict[str, list[tuple[str, bytes]]], classes: tuple[str, ...],
                   size: tuple[int, int] | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """{class: [(name, bytes)]} -> images uint8 (N, H, W), labels int64 (N,), classes in the given order."""
    images, labels = [], []
    for label, name in enumerate(classes):
        members = sorted(files.get(name, []))
        if not members:
            raise UserError(f"{where}/{name}: no images in this class directory")
        for file, data in members:
            images.append(decode_image(data, file, size))
            size = images[-1].shape
            labels.append(label)
    return np.stack(images), np.array(labels, np.int64)


def read_image_folder(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """A folder of <class>/<image> files: classes are the sorted directory names, one image size for all."""
    if not raw_dir.is_dir():
        raise UserError(f"{raw_dir}: no such folder")
    loose = [p.name for p in raw_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        raise UserError(f"{raw_dir / loose[0]}: a file outside any class directory; expected <class>/<image>")
    classes = tuple(sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(classes) < 2:
        raise UserError(f"{raw_dir}: {len(classes)} class directories, expected at least 2 (<class>/<image>)")
    files = {name: [(str(f), f.read_bytes()) for f in (raw_dir / name).iterdir()
                    if f.is_file() and not f.name.startswith(".")] for name in classes}
    images, labels = decode_classes(files, classes, spec.image_size, str(raw_dir))
    return Parsed(images, labels, {}, classes)
