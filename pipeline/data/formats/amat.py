"""amat text (mnist-rot-back-image): a zip of two files of rows of 784 floats in [0, 1] then the label.

The rows are parsed a chunk at a time, each chunk by the fast fixed-width path (amat_fast.py) when it
has the published layout, else by general_values, the readable reference reader."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from pipeline.data.formats.amat_fast import fixed_width_values
from pipeline.data.formats.archives import safe_zip_names
from pipeline.data.formats.base import Parsed, check_arrays
from pipeline.data.registry import AMAT_SPLIT, AMAT_TEST, AMAT_TRAIN_VALID, DatasetSpec
from pipeline.runtime import UserError

AMAT_VALUES = 28 * 28 + 1  # values per row: 784 pixels in [0, 1], then the label
AMAT_CHUNK = 1 << 19  # bytes of text parsed at a time: bounds the temporaries to a few MB (512 KB: fastest here)


def general_values(block: memoryview, source: str, first_row: int) -> np.ndarray:
    """(rows, 785) float64 of whole lines in any whitespace-separated float layout (NumPy's C reader): the
    readable reference of amat_fast.fixed_width_values, and the reader of every layout it leaves."""
    try:
        values = np.loadtxt(io.BytesIO(block), dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise UserError(f"{source}: near row {first_row + 1}: {err}") from None
    if values.shape[1] != AMAT_VALUES:
        raise UserError(f"{source}: rows have {values.shape[1]} values, expected {AMAT_VALUES} (784 pixels, label)")
    return values


def parse_amat(stream: BinaryIO, rows: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """An .amat text stream of exactly `rows` rows -> pixels uint8 (rows, 784), labels int64 (rows,).

    Read in chunks of whole lines into one reused buffer and parsed straight into preallocated arrays,
    so memory stays near the size of the result. Pixels in [0, 1] become round(x * 255): the 8-bit grey
    levels the other formats have."""
    pixels, labels = np.empty((rows, AMAT_VALUES - 1), np.uint8), np.empty(rows, np.int64)
    done = 0
    buf = bytearray(2 * AMAT_CHUNK)
    have = 0  # bytes of an unfinished line kept at the front of buf
    while True:
        if len(buf) - have < AMAT_CHUNK:  # a line longer than a chunk: make room
            buf += bytes(len(buf))
        with memoryview(buf) as view:
            got = stream.readinto(view[have:have + AMAT_CHUNK])
            end = have + got
            cut = buf.rfind(b"\n", 0, end) + 1 if got else end  # whole lines; at the end, whatever is left
            block = view[:cut]
            if cut and not (bytes(block[:64]).isspace() and bytes(block).isspace()):
                values = fixed_width_values(block, AMAT_VALUES)
                if values is None:
                    values = general_values(block, source, done)
                if done + len(values) > rows:
                    raise UserError(f"{source}: more than the {rows} rows this file has when published")
                _store_amat_rows(values, pixels[done:done + len(values)], labels[done:done + len(values)], source,
                                 done)
                done += len(values)
            block.release()  # a live slice would keep buf from growing
        buf[:end - cut] = buf[cut:end]
        have = end - cut
        if not got:
            break
    if done != rows:
        raise UserError(f"{source}: {done} rows, expected {rows}; truncated?")
    return pixels, labels


def _store_amat_rows(values: np.ndarray, pixels: np.ndarray, labels: np.ndarray, source: str, first: int) -> None:
    """Check one block of (rows, 785) values and write it into the output slices."""
    x, y = values[:, :-1], values[:, -1]
    if x.min() < 0 or x.max() > 1:
        bad = first + int(np.flatnonzero((x < 0).any(1) | (x > 1).any(1))[0]) + 1
        raise UserError(f"{source}: row {bad}: pixel values outside [0, 1]")
    if not np.array_equal(y, np.rint(y)) or y.min() < 0 or y.max() > 9:
        bad = first + int(np.flatnonzero((y != np.rint(y)) | (y < 0) | (y > 9))[0]) + 1
        raise UserError(f"{source}: row {bad}: label {float(values[bad - first - 1, -1])} is not one of 0..9")
    x *= 255
    np.rint(x, out=x)
    pixels[:] = x
    labels[:] = y


def read_amat_zip(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """The zip of two .amat files: train_valid (10,000 train then 2,000 val rows) and test (50,000 rows)."""
    path = raw_dir / spec.files[0].stored_name
    height, width = spec.image_size
    counts = dict(AMAT_SPLIT)
    try:
        with zipfile.ZipFile(path) as zf:
            names = {PurePosixPath(n).name: n for n in safe_zip_names(path, zf)}
            parts = []
            for member, rows in ((AMAT_TRAIN_VALID, counts["train"] + counts["val"]), (AMAT_TEST, counts["test"])):
                if member not in names:
                    raise UserError(f"{path}: no member {member}; it holds {', '.join(sorted(names)) or 'nothing'}")
                with zf.open(names[member]) as stream:
                    pixels, labels = parse_amat(stream, rows, f"{path}:{member}")
                parts.append((pixels.reshape(-1, height, width), labels))
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise UserError(f"{path}: not a readable zip archive ({err}); truncated?") from None
    (train_images, train_labels), (test_images, test_labels) = parts
    images, labels = np.concatenate([train_images, test_images]), np.concatenate([train_labels, test_labels])
    check_arrays(spec, images, labels, str(path))
    bounds = np.cumsum([0, *counts.values()])
    return Parsed(images, labels, {s: (int(a), int(b)) for s, a, b in zip(counts, bounds[:-1], bounds[1:])},
                  spec.classes)
