"""idx files (pipeline/data/formats/idx.py) written in the exact published layout."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import sources
from pipeline.data.formats.idx import read_idx_dataset
from pipeline.data.registry import FASHION_MNIST, MIRROR_ENV, RawFile
from pipeline.runtime import UserError

RNG = np.random.default_rng(3)


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
    parsed = read_idx_dataset(spec, tmp_path / "raw")
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
        read_idx_dataset(FASHION_MNIST, tmp_path)
