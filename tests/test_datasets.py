"""Sources (system dir, MD5, downloads over HTTP), user folders, and the real data in ../shared/datasets where
it exists. Each raw format's own tests are in tests/test_formats_<format>.py."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATASETS, run_module
from test_formats_image_folder import write_folder
from pipeline.data import sources
from pipeline.data.formats.idx import read_idx
from pipeline.data.formats.readers import READERS
from pipeline.data.registry import FASHION_MNIST, MIRROR_ENV, MNIST, RawFile
from pipeline.runtime import UserError

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
    parsed = READERS[spec.format](spec, tmp_path)
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
    images = read_idx(tmp_path / "t10k-images-idx3-ubyte", 3)
    labels = read_idx(tmp_path / "t10k-labels-idx1-ubyte", 1)
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


def test_folder_download_parse_stages(tmp_path: Path, params: dict, write_params) -> None:
    """folder snapshots the user's folder; download copies the snapshot; parse names the classes and records
    the transforms that keep its labels: shifts unless params.yaml image_folder_keeps_label says otherwise."""
    from pipeline.data.parsed import load_parsed

    write_folder(tmp_path / "mine", {"yes": 2, "no": 3}, size=(12, 12))
    assert run_module("src.folder", "--source", tmp_path / "mine", "--out", tmp_path / "folders" / "mine").returncode == 0
    assert run_module("src.download", "--dataset", "mine", "--folders", tmp_path / "folders",
                     "--out", tmp_path / "raw").returncode == 0
    params["image_folders"] = {"mine": str(tmp_path / "mine")}
    for stated, kept in ((None, ("shift",)), (["flip", "shift"], ("flip", "shift")), ([], ())):
        params["image_folder_keeps_label"] = {} if stated is None else {"mine": stated}
        done = run_module("src.parse", "--dataset", "mine", "--raw", tmp_path / "raw", "--out", tmp_path / "parsed",
                          "--params", write_params(params))
        assert done.returncode == 0, done.stderr
        parsed = load_parsed(tmp_path / "parsed")
        assert parsed.classes == ["no", "yes"] and parsed.images.shape == (5, 12, 12)
        assert parsed.keeps_label == kept


def test_keeps_label_params(params: dict, write_params) -> None:
    """image_folder_keeps_label names folders of image_folders and transforms of LABEL_KEEPING only."""
    from pipeline.config import load_params

    params["image_folders"] = {"mine": "/data/mine"}
    params["image_folder_keeps_label"] = {"mine": ["flip"]}
    assert load_params(write_params(params)).image_folder_keeps_label == {"mine": ["flip"]}
    params["image_folder_keeps_label"] = {"theirs": ["flip"]}
    with pytest.raises(UserError, match="image_folder_keeps_label: 'theirs' is not a name in image_folders; valid: "):
        load_params(write_params(params))
    params["image_folder_keeps_label"] = {"mine": ["rotate"]}
    with pytest.raises(UserError, match=r"image_folder_keeps_label\.mine\.0: must be 'flip' or 'shift'"):
        load_params(write_params(params))


def test_registry_states_what_keeps_a_label() -> None:
    """Clothing keeps flips and shifts; digits only shifts (a mirrored 2 is no 2)."""
    from pipeline.data.registry import DATASETS, LABEL_KEEPING

    assert DATASETS["fashion-mnist"].keeps_label == ("flip", "shift")
    for name in ("mnist-5k", "mnist", "mnist-png", "mnist-rot-back-image"):
        assert DATASETS[name].keeps_label == ("shift",), name
    assert all(set(spec.keeps_label) <= set(LABEL_KEEPING) for spec in DATASETS.values())
