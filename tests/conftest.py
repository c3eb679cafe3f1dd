"""Shared test helpers: the repository root and the committed params.yaml; `python -m` runs of the stages
and the one-`error:`-line check; a small learnable synthetic dataset and a dvclive log; git and DVC
commands in a temporary copy of the project, and a tiny reproduced copy of it."""

from __future__ import annotations

import copy
import functools
import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML

from pipeline.data.parsed import ParsedDataset, save_parsed
from pipeline.data.registry import MIRROR_ENV
from pipeline.data.split import make_split, save_split
from pipeline.runtime import run_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
# The offline mirror of real data: $MNIST_PIPELINE_MIRROR if set, else the folder beside the repository.
if (REPO_ROOT.parent / "shared" / "datasets").is_dir():
    os.environ.setdefault(MIRROR_ENV, str(REPO_ROOT.parent / "shared" / "datasets"))
SHARED_DATASETS = Path(os.environ.get(MIRROR_ENV) or REPO_ROOT.parent / "shared" / "datasets")


# ---------------------------------------------------------------- the committed params.yaml

def committed_params_text() -> str:
    """params.yaml as committed (HEAD), not as the workspace has it: a user's local edit must not change
    what the tests check. Outside a git checkout, the file itself."""
    done = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO_ROOT, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else (REPO_ROOT / "params.yaml").read_text()


@functools.cache
def _committed_params_dict() -> dict[str, Any]:
    return YAML(typ="safe").load(committed_params_text())


def committed_params_dict() -> dict[str, Any]:
    """The committed params.yaml as plain data, a private copy each call."""
    return copy.deepcopy(_committed_params_dict())


def another_value(value: float, factor: float) -> float:
    """`value` x `factor` to two significant digits: a tunable setting moved off whatever it is today, so a
    test that changes it never depends on (nor pins) params.yaml's default."""
    changed = float(f"{value * factor:.2g}")
    assert changed != value, f"{value} x {factor} rounds back to {value}"
    return changed


@pytest.fixture(scope="session")
def committed_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test-owned copy of the committed params.yaml."""
    path = tmp_path_factory.mktemp("committed") / "params.yaml"
    path.write_text(committed_params_text())
    return path


# ---------------------------------------------------------------- stages as a user runs them

def run_module(*args: str | Path, timeout: float | None = 120, **options: Any) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` with the test's interpreter, in the repository root; output captured as text."""
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=options.pop("cwd", REPO_ROOT),
                          capture_output=True, text=True, timeout=timeout, **options)


def one_error(code: int | str | None, stderr: str, *fragments: str) -> str:
    """Non-zero exit, no traceback, exactly one `error:` line holding every fragment; returns that line."""
    assert code not in (0, None), stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def call_stage(stage: str, *args: str | Path, capsys: pytest.CaptureFixture[str],
               monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run `python -m src.<stage> args` in-process through run_stage(); returns (exit status, stderr)."""
    module = importlib.import_module(f"src.{stage}")
    monkeypatch.setattr(sys, "argv", [stage, *map(str, args)])
    capsys.readouterr()
    try:
        run_stage(module.main)
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


NUM_CLASSES = 10
PER_CLASS = 60
SIDE = 28
BLOCK = 6  # side of each class's bright square


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 28, 28): a bright square at a class-specific place, jittered by up to 2 pixels, on strong
    noise; an MLP gets most but not all of them right after one epoch."""
    images = rng.integers(0, 150, size=(len(labels), SIDE, SIDE)).astype(np.uint8)
    for i, label in enumerate(labels):
        top, left = 2 + (label // 5) * 13, 2 + (label % 5) * 5  # two rows of five places
        top, left = np.clip([top, left] + rng.integers(-2, 3, size=2), 0, SIDE - BLOCK)
        images[i, top:top + BLOCK, left:left + BLOCK] = rng.integers(100, 256, size=(BLOCK, BLOCK))
    return images


@pytest.fixture(scope="session")
def synthetic() -> ParsedDataset:
    """10 classes x 60 images of 28x28, sorted by class like mnist-5k; easy to learn in a few epochs."""
    rng = np.random.default_rng(1234)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), PER_CLASS)
    return ParsedDataset("synthetic", synthetic_images(labels, rng), labels, [str(k) for k in range(NUM_CLASSES)])


@pytest.fixture(scope="session")
def synthetic_split(synthetic: ParsedDataset) -> dict[str, np.ndarray]:
    """Stratified 60 / 20 / 20 split of the synthetic rows."""
    return make_split(synthetic.labels, {}, val_fraction=0.25, test_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def repo_params_dict() -> dict[str, Any]:
    return committed_params_dict()


@pytest.fixture
def params(repo_params_dict: dict[str, Any]) -> dict[str, Any]:
    """A private copy of the committed params.yaml, free to mutate."""
    return copy.deepcopy(repo_params_dict)


def dump_params(data: dict[str, Any], path: Path) -> Path:
    with open(path, "w") as f:
        YAML(typ="safe").dump(data, f)
    return path


@pytest.fixture
def write_params(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """write_params(dict) -> path of a params.yaml holding it, inside tmp_path."""
    return lambda data: dump_params(data, tmp_path / "params.yaml")


def set_keys(params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`params` with each dotted key of `changes` ('models.mlp.lr': 0.1) set to its value, in place; returned."""
    for dotted, value in changes.items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return params


@pytest.fixture
def stage_dir(tmp_path: Path, synthetic: ParsedDataset, synthetic_split: dict[str, np.ndarray],
              params: dict[str, Any]) -> Path:
    """tmp_path with parsed/, split/ (the synthetic set) and params.yaml (committed, mlp 1 epoch, cpu)."""
    save_parsed(synthetic, tmp_path / "parsed")
    save_split(synthetic_split, tmp_path / "split")
    params["device"] = "cpu"
    params["models"]["mlp"].update(epochs=1, batch_size=32)
    dump_params(params, tmp_path / "params.yaml")
    return tmp_path


def write_dvclive_tree(live_dir: Path, epochs: int = 4) -> None:
    """plots/metrics/{train,val}/{loss,accuracy}.tsv as dvclive writes them: timestamp, step, value."""
    for subset, offset in (("train", 0.0), ("val", 0.1)):
        folder = live_dir / "plots" / "metrics" / subset
        folder.mkdir(parents=True)
        for metric in ("loss", "accuracy"):
            values = [(1 / (step + 1) if metric == "loss" else 0.5 + 0.1 * step) + offset for step in range(epochs)]
            rows = [f"{1700000000000 + step}\t{step}\t{value}" for step, value in enumerate(values)]
            (folder / f"{metric}.tsv").write_text("\n".join([f"timestamp\tstep\t{metric}", *rows]) + "\n")


# ---------------------------------------------------------------- git and DVC on a copy of the project

PROJECT_FILES = ["dvc.yaml", "params.yaml", "pipeline", "src", "templates", ".gitignore", ".dvcignore",
                 "data/folders"]
DATASET = "mnist-5k"


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command with the test's Python first on PATH (dvc.yaml calls `python`); return its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def dvc(*args: str, cwd: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd)


def git_commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", message], repo)


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_params(repo: Path, **changes: object) -> None:
    """Set models.<model>.<key> values given as model__key=value, <section>__<key>=value, or top-level keys."""
    yaml = YAML()  # round-trip: keeps the comments, as `dvc exp run -S` does
    params = yaml.load(repo / "params.yaml")
    for dotted, value in changes.items():
        if "__" not in dotted:
            params[dotted] = value
            continue
        section, key = dotted.split("__")
        (params["models"][section] if section in params["models"] else params[section])[key] = value
    yaml.dump(params, repo / "params.yaml")


def copy_project(repo: Path) -> Path:
    """Copy the project's files (not its outputs, git or DVC state) into the folder `repo`."""
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, repo / name)
    (repo / "params.yaml").write_text(committed_params_text())  # not the workspace's (maybe edited) copy
    return repo


@pytest.fixture(scope="session")
def tiny_trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository of the project on tiny params (mlp alone, one epoch), reproduced and committed
    on branch main, without a remote. Tests copy it (`shutil.copytree(..., symlinks=True)`), never change it."""
    repo = copy_project(tmp_path_factory.mktemp("tiny-trained"))
    run(["git", "init", "-q", "-b", "main"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.analytics", "false", cwd=repo)
    edit_params(repo, run__models=["mlp"], mlp__epochs=1, evaluate__rotations=[0, 45], evaluate__embedding_points=100)
    git_commit(repo, "project")
    assert f"train@{DATASET}-mlp" in stages_run(dvc("repro", cwd=repo))
    git_commit(repo, "tiny run")
    return repo


# ---------------------------------------------------------------- a model trained on real data

@pytest.fixture(scope="session")
def mnist5k_lenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mnist-5k downloaded, parsed and split, and LeNet trained on it for 3 epochs, by the stages themselves
    (about 30 s on 2 CPU cores); returns the folder holding parsed/, split/ and lenet.pt."""
    root = tmp_path_factory.mktemp("mnist5k-lenet")
    params = committed_params_dict()
    params["models"]["lenet"]["epochs"] = 3
    dump_params(params, root / "params.yaml")
    for stage, options in [
        ("download", ["--dataset", DATASET, "--out", root / "raw"]),
        ("parse", ["--dataset", DATASET, "--raw", root / "raw", "--out", root / "parsed"]),
        ("split", ["--parsed", root / "parsed", "--out", root / "split", "--params", root / "params.yaml"]),
        ("train", ["--model", "lenet", "--parsed", root / "parsed", "--split", root / "split", "--out",
                   root / "lenet.pt", "--live", root / "live", "--params", root / "params.yaml"]),
    ]:
        done = run_module(f"src.{stage}", *options, timeout=600)
        assert done.returncode == 0, done.stderr
    return root
