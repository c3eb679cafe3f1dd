"""Shared fixtures: a small learnable synthetic dataset, the committed params.yaml as a plain dict, and a tiny
reproduced copy of the project."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML

from pipeline.data.parsed import ParsedDataset
from pipeline.data.registry import MIRROR_ENV
from pipeline.data.split import make_split

REPO_ROOT = Path(__file__).resolve().parents[1]
# The offline mirror of real data: $MNIST_PIPELINE_MIRROR if set, else the folder beside the repository.
if (REPO_ROOT.parent / "shared" / "datasets").is_dir():
    os.environ.setdefault(MIRROR_ENV, str(REPO_ROOT.parent / "shared" / "datasets"))
SHARED_DATASETS = Path(os.environ.get(MIRROR_ENV) or REPO_ROOT.parent / "shared" / "datasets")


def committed_params_text() -> str:
    """params.yaml as committed (HEAD), not as the workspace has it: a user's local edit must not change
    what the tests check. Outside a git checkout, the file itself."""
    done = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO_ROOT, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else (REPO_ROOT / "params.yaml").read_text()


@pytest.fixture(scope="session")
def committed_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test-owned copy of the committed params.yaml."""
    path = tmp_path_factory.mktemp("committed") / "params.yaml"
    path.write_text(committed_params_text())
    return path
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
    return YAML(typ="safe").load(committed_params_text())


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


@pytest.fixture(scope="session")
def tiny_trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository of the project on tiny params (mlp alone, one epoch), reproduced and committed
    on branch main, without a remote. Tests copy it (`shutil.copytree(..., symlinks=True)`), never change it."""
    from test_pipeline_e2e import DATASET, copy_project, dvc, edit_params, git_commit, run, stages_run

    repo = copy_project(tmp_path_factory.mktemp("tiny-trained"))
    run(["git", "init", "-q", "-b", "main"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.analytics", "false", cwd=repo)
    edit_params(repo, run__models=["mlp"], mlp__epochs=1, evaluate__rotations=[0, 45], evaluate__embedding_points=100)
    git_commit(repo, "project")
    assert f"train@{DATASET}-mlp" in stages_run(dvc("repro", cwd=repo))
    git_commit(repo, "tiny run")
    return repo
