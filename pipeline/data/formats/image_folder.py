"""Folders of <class>/<image> files (user folders), as they are or converted, and the image decoding the
png-tgz reader shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.convert import BadImage, Conversion, convert_image, open_image, summarize
from pipeline.data.formats.base import Parsed
from pipeline.data.registry import CONVERSION_FILE, DatasetSpec
from pipeline.io import read_json
from pipeline.runtime import UserError


def decode_image(data: bytes, name: str, size: tuple[int, int] | None) -> np.ndarray:
    """One grayscale image file -> uint8 (H, W) as it is; a wrong mode or size is a UserError naming the file."""
    try:
        image, _ = open_image(data, name, upright=False)
    except BadImage as err:
        raise UserError(str(err)) from None
    mode, array = image.mode, np.asarray(image)
    if mode != "L":
        raise UserError(f"{name}: image mode {mode}, expected 8-bit grayscale (L); convert the folder to grayscale, "
                        "or give it conversion options (params.yaml image_conversion)")
    if size and array.shape != size:
        raise UserError(f"{name}: {array.shape[1]}x{array.shape[0]} pixels, expected {size[1]}x{size[0]} "
                        "like the other images, or give the folder conversion options (params.yaml image_conversion)")
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


def convert_classes(files: dict[str, list[tuple[str, bytes]]], classes: tuple[str, ...], conversion: Conversion,
                    where: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """{class: [(name, bytes)]} -> images uint8 (N, H, W), labels int64 (N,) and what the conversion did,
    each image converted as predict converts its input; a file that is not a usable image is a UserError."""
    names, converted, labels = [], [], []
    for label, name in enumerate(classes):
        members = sorted(files.get(name, []))
        if not members:
            raise UserError(f"{where}/{name}: no images in this class directory")
        for file, data in members:
            try:
                converted.append(convert_image(data, file, conversion))
            except BadImage as err:
                raise UserError(str(err)) from None
            names.append(f"{name}/{Path(file).name}")
            labels.append(label)
    images = np.stack([c.image for c in converted])
    return images, np.array(labels, np.int64), summarize(names, converted, conversion)


def read_image_folder(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """A folder of <class>/<image> files: classes are the sorted directory names. As it is, every image is
    8-bit grayscale of one size; with a CONVERSION_FILE beside the classes, any image is converted."""
    if not raw_dir.is_dir():
        raise UserError(f"{raw_dir}: no such folder")
    loose = [p.name for p in raw_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != CONVERSION_FILE]
    if loose:
        raise UserError(f"{raw_dir / loose[0]}: a file outside any class directory; expected <class>/<image>")
    classes = tuple(sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(classes) < 2:
        raise UserError(f"{raw_dir}: {len(classes)} class directories, expected at least 2 (<class>/<image>)")
    files = {name: [(str(f), f.read_bytes()) for f in (raw_dir / name).iterdir()
                    if f.is_file() and not f.name.startswith(".")] for name in classes}
    if (raw_dir / CONVERSION_FILE).is_file():
        options = read_json(raw_dir / CONVERSION_FILE)
        conversion = Conversion(tuple(options["size"]), options["invert"])
        images, labels, summary = convert_classes(files, classes, conversion, str(raw_dir))
        return Parsed(images, labels, {}, classes, summary)
    images, labels = decode_classes(files, classes, spec.image_size, str(raw_dir))
    return Parsed(images, labels, {}, classes)
