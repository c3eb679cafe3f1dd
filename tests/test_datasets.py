"""Every raw format on small files written in the exact published layout, safe archives, downloads over
HTTP, user folders, and the real data in ../shared/datasets where it exists."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATASETS, run_module
from pipeline.data import formats, sources
from pipeline.data.registry import (AMAT_TEST, AMAT_TRAIN_VALID, FASHION_MNIST, MIRROR_ENV, MNIST,
                                    MNIST_PNG, MNIST_ROT_BACK_IMAGE, RawFile, folder_dataset)
from pipeline.runtime import UserError

RNG = np.random.default_rng(3)


# ---------------------------------------------------------------- idx

def idx_bytes(array: np.ndarray) -> bytes:
    """The published idx layout: 0, 0, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the bytes."""
    return bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def idx_dataset(n_train: int = 12, n_test: int = 5) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """The four idx payloads of an MNIST-layout dataset ({published .gz name: payload}), images and labels."""
    images = RNG.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_train + n_test) % 10).astype(np.uint8)
    payloads = {}
    for prefix, rows in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        payloads[f"{prefix}-images-idx3-ubyte.gz"] = idx_bytes(images[rows])
        payloads[f"{prefix}-labels-idx1-ubyte.gz"] = idx_bytes(labels[rows])
    return payloads, images, labels.astype(np.int64)


def test_idx_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The published .gz files in a mirror -> download (verified, kept as their payloads) -> parse."""
    payloads, images, labels = idx_dataset()
    (tmp_path / "mirror" / FASHION_MNIST.name).mkdir(parents=True)
    for name, payload in payloads.items():
        (tmp_path / "mirror" / FASHION_MNIST.name / name).write_bytes(gzip.compress(payload))
    spec = dataclasses.replace(FASHION_MNIST, system_dir=None, files=tuple(
        RawFile(name, hashlib.sha256(payload).hexdigest()) for name, payload in payloads.items()))
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    sources.download(spec, tmp_path / "raw")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted([sources.CHECKSUMS, *(n.removesuffix(".gz") for n in payloads)])
    parsed = formats.read_idx_dataset(spec, tmp_path / "raw")
    np.testing.assert_array_equal(parsed.images, images)
    np.testing.assert_array_equal(parsed.labels, labels)
    assert parsed.labels.dtype == np.int64 and parsed.images.dtype == np.uint8
    assert parsed.official == {"train": (0, 12), "test": (12, 17)} and parsed.classes == FASHION_MNIST.classes


@pytest.mark.parametrize(("case", "reason"), [
    ("magic", "bad idx magic"), ("truncated", "truncated or padded"), ("count", "12 images but 11 labels"),
    ("label", "labels span 0..10"), ("size", r"shape \(12, 28, 27\), expected \(N, 28, 28\)"),
    ("missing", r"missing \(run the download stage first\)")])
def test_idx_rejects(tmp_path: Path, case: str, reason: str) -> None:
    """Structural checks on the payloads the download stage keeps (a broken .gz never gets that far)."""
    payloads, _, _ = idx_dataset()
    name = "train-labels-idx1-ubyte.gz" if case in ("count", "label") else "train-images-idx3-ubyte.gz"
    payload = payloads[name]
    if case == "magic":
        payload = b"\x00\x00\x08\x01" + payload[4:]
    elif case == "truncated":
        payload = payload[:-100]
    elif case == "count":
        payload = idx_bytes(np.frombuffer(payload[8:], np.uint8)[:11])
    elif case == "label":
        payload = payload[:-1] + b"\x0a"
    elif case == "size":
        payload = idx_bytes(np.zeros((12, 28, 27), np.uint8))
    payloads[name] = payload
    for published, content in payloads.items():
        if not (case == "missing" and published == name):
            (tmp_path / published.removesuffix(".gz")).write_bytes(content)
    with pytest.raises(UserError, match=reason):
        formats.read_idx_dataset(FASHION_MNIST, tmp_path)


# ---------------------------------------------------------------- amat

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
    got, got_labels = formats.parse_amat(io.BytesIO(amat_text(pixels, labels, fmt)), 40, "t.amat")
    expected = reference_pixels(pixels) if fmt == "%.18e" else np.rint(
        np.array([[float(f"{v:g}") for v in row] for row in pixels]) * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))


def test_parse_amat_chunks_cut_mid_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "AMAT_CHUNK", 7777)  # many chunks, each ending inside a row
    pixels, labels = amat_rows(30)
    got, _ = formats.parse_amat(io.BytesIO(amat_text(pixels, labels)), 30, "t.amat")
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
        formats.parse_amat(io.BytesIO(text), rows, "t.amat")


def write_amat_zip(path: Path, sizes: tuple[int, int], extra: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = amat_rows(sum(sizes))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(AMAT_TRAIN_VALID, amat_text(pixels[:sizes[0]], labels[:sizes[0]]))
        zf.writestr(AMAT_TEST, amat_text(pixels[sizes[0]:], labels[sizes[0]:]))
        if extra:
            zf.writestr(extra, b"x")
    return reference_pixels(pixels).reshape(-1, 28, 28), labels.astype(np.int64)


def test_amat_zip_keeps_official_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "AMAT_SPLIT", (("train", 8), ("val", 2), ("test", 5)))  # small stand-in
    images, labels = write_amat_zip(tmp_path / MNIST_ROT_BACK_IMAGE.files[0].name, (10, 5))
    parsed = formats.read_amat_zip(MNIST_ROT_BACK_IMAGE, tmp_path)
    np.testing.assert_array_equal(parsed.images, images)
    np.testing.assert_array_equal(parsed.labels, labels)
    assert parsed.official == {"train": (0, 8), "val": (8, 10), "test": (10, 15)}


def test_amat_zip_refuses_escaping_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "AMAT_SPLIT", (("train", 8), ("val", 2), ("test", 5)))
    write_amat_zip(tmp_path / MNIST_ROT_BACK_IMAGE.files[0].name, (10, 5), extra="../../evil.sh")
    with pytest.raises(UserError, match="'../../evil.sh' would land outside the target directory"):
        formats.read_amat_zip(MNIST_ROT_BACK_IMAGE, tmp_path)


# ---------------------------------------------------------------- png tgz and image folders

def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


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
    parsed = formats.read_png_tgz(MNIST_PNG, tmp_path)
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
        formats.read_png_tgz(MNIST_PNG, tmp_path)


def write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 16)) -> None:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            (root / name / f"{n}.png").write_bytes(png_bytes(RNG.integers(0, 256, size, dtype=np.uint8)))


def test_image_folder(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": 3, "ant": 2})
    parsed = formats.read_image_folder(folder_dataset("pets"), tmp_path)
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
        formats.read_image_folder(folder_dataset("x"), tmp_path)


def test_copy_folder_refuses_links(tmp_path: Path) -> None:
    write_folder(tmp_path / "src", {"a": 1, "b": 1})
    (tmp_path / "src" / "a" / "link.png").symlink_to(tmp_path / "src" / "b" / "0.png")
    with pytest.raises(UserError, match="link.png: a symbolic link"):
        sources.copy_folder(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- sources: system dir, MD5, HTTP

GOOD = gzip.compress(b"payload " * 1000, mtime=0)
RAW = RawFile("f.gz", hashlib.sha256(b"payload " * 1000).hexdigest())


def test_system_dir_after_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "empty-mirror"))
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / RAW.name).write_bytes(gzip.compress(b"payload " * 1000, 1))  # recompressed
    out = sources.fetch_file("d", RAW, tmp_path / "out", system_dir=str(tmp_path / "system"))
    assert out.read_bytes() == b"payload " * 1000


def test_published_md5_when_no_payload_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / RAW.name).write_bytes(GOOD)
    raw = dataclasses.replace(RAW, sha256=None, published_md5=hashlib.md5(GOOD).hexdigest())
    assert sources.fetch_file("d", raw, tmp_path / "out").read_bytes() == b"payload " * 1000
    with pytest.raises(UserError, match="checksum mismatch \\(md5"):
        sources.fetch_file("d", dataclasses.replace(raw, published_md5="0" * 32), tmp_path / "out2")


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; yields (that folder, its base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_over_http(http_root: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """First URL 404, second a corrupted copy, third the good one: the good one lands, nothing else."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    root, base = http_root
    for folder, content in (("corrupt", gzip.compress(b"payload " * 999)), ("good", GOOD)):
        (root / folder).mkdir()
        (root / folder / RAW.name).write_bytes(content)
    urls = tuple(f"{base}/{folder}/{RAW.name}" for folder in ("missing", "corrupt", "good"))
    out = sources.fetch_file("d", dataclasses.replace(RAW, urls=urls), tmp_path / "out")
    assert out.read_bytes() == b"payload " * 1000 and [p.name for p in out.parent.iterdir()] == ["f"]

    (root / "good" / RAW.name).write_bytes(b"<!DOCTYPE html><title>moved</title>")
    with pytest.raises(UserError) as info:
        sources.fetch_file("d", dataclasses.replace(RAW, urls=urls), tmp_path / "out2")
    message = str(info.value)
    assert f"url {urls[0]}: HTTP 404" in message
    assert f"url {urls[1]}: checksum mismatch" in message
    assert f"url {urls[2]}: an HTML page" in message
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").iterdir())


# ---------------------------------------------------------------- real data (../shared/datasets)

needs_mirror = pytest.mark.skipif(not SHARED_DATASETS.is_dir(),
                                  reason=f"no real-data mirror at {SHARED_DATASETS} (set $MNIST_PIPELINE_MIRROR)")


@needs_mirror
def test_real_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The four files verify by their payload checksums (Debian's recompressed copies), then parse."""
    monkeypatch.setenv(MIRROR_ENV, str(SHARED_DATASETS))
    spec = dataclasses.replace(FASHION_MNIST, system_dir=None)
    sources.download(spec, tmp_path)
    parsed = formats.READERS[spec.format](spec, tmp_path)
    assert parsed.images.shape == (70_000, 28, 28) and parsed.official == {"train": (0, 60_000), "test": (60_000,
                                                                                                        70_000)}
    np.testing.assert_array_equal(np.bincount(parsed.labels[:60_000]), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(parsed.labels[60_000:]), [1000] * 10)


@needs_mirror
def test_real_mnist_test_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(SHARED_DATASETS))
    for raw in MNIST.files:
        if raw.name.startswith("t10k"):
            sources.fetch_file(MNIST.name, raw, tmp_path)
    images = formats.read_idx(tmp_path / "t10k-images-idx3-ubyte", 3)
    labels = formats.read_idx(tmp_path / "t10k-labels-idx1-ubyte", 1)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- user folders: params and the stages

@pytest.mark.parametrize(("folders", "datasets", "reason"), [
    ({"mine": "/data/mine"}, ["mnist-5k", "mine"], None),
    ({"My Digits": "/x"}, ["mnist-5k"], "image_folders: name 'My Digits' must be lowercase"),
    ({"mnist": "/x"}, ["mnist-5k"], "image_folders: name 'mnist' is a built-in dataset"),
    ({"mine": "/x"}, ["mine", "theirs"], "run.datasets: unknown name 'theirs'; valid: mnist-5k, mnist, fashion-mnist, "
                                         "mnist-rot-back-image, mnist-png, mine")])
def test_image_folders_params(params: dict, write_params, folders: dict, datasets: list, reason: str | None) -> None:
    from pipeline.config import load_params

    params["image_folders"], params["run"]["datasets"] = folders, datasets
    if reason is None:
        assert load_params(write_params(params)).image_folders == folders
    else:
        with pytest.raises(UserError, match=reason):
            load_params(write_params(params))


def test_folder_download_parse_stages(tmp_path: Path) -> None:
    """folder snapshots the user's folder; download copies the snapshot; parse names the classes."""
    write_folder(tmp_path / "mine", {"yes": 2, "no": 3}, size=(12, 12))
    assert run_module("src.folder", "--source", tmp_path / "mine", "--out", tmp_path / "folders" / "mine").returncode == 0
    assert run_module("src.download", "--dataset", "mine", "--folders", tmp_path / "folders",
                     "--out", tmp_path / "raw").returncode == 0
    done = run_module("src.parse", "--dataset", "mine", "--raw", tmp_path / "raw", "--out", tmp_path / "parsed")
    assert done.returncode == 0, done.stderr
    from pipeline.data.parsed import load_parsed

    parsed = load_parsed(tmp_path / "parsed")
    assert parsed.classes == ["no", "yes"] and parsed.images.shape == (5, 12, 12)
