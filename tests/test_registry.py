"""The model registry: trained models declared as DVC artifacts in dvc.yaml, fetched by name into a
folder outside the project through a bare git origin and a folder remote, then used by predict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ruamel.yaml import YAML

from conftest import DATASET, REPO_ROOT, committed_params_dict, dvc, git_commit, run

ARTIFACT_KEYS = {"path", "type", "desc", "labels", "meta"}


def artifacts() -> dict[str, dict]:
    return YAML(typ="safe").load((REPO_ROOT / "dvc.yaml").read_text())["artifacts"]


def test_every_model_of_the_default_run_is_a_model_artifact() -> None:
    run_section = committed_params_dict()["run"]
    expected = {f"{d}-{m}": f"models/{d}/{m}.pt" for d in run_section["datasets"] for m in run_section["models"]}
    declared = artifacts()
    assert {name: a["path"] for name, a in declared.items()} == expected
    for name, artifact in declared.items():
        assert set(artifact) == ARTIFACT_KEYS and artifact["type"] == "model", name
        dataset, model = artifact["meta"]["dataset"], artifact["meta"]["model"]
        assert name == f"{dataset}-{model}" and {dataset, model} <= set(artifact["labels"]), name


@pytest.mark.e2e
def test_fetch_a_model_by_name_into_an_empty_folder_and_predict(tiny_trained_repo: Path, tmp_path: Path) -> None:
    origin, remote = tmp_path / "origin.git", tmp_path / "remote"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    project = tmp_path / "project"
    shutil.copytree(tiny_trained_repo, project, symlinks=True)
    dvc("remote", "add", "-d", "storage", str(remote), cwd=project)  # in .dvc/config: committed, so clones see it
    git_commit(project, "DVC remote")
    # Registering a version is a git tag <name>@v<semver> (what `gto register` writes): `dvc artifacts get`
    # fetches the newest registered version, and finds nothing without one.
    name, weights = f"{DATASET}-mlp", project / f"models/{DATASET}/mlp.pt"
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "tag", "-a", f"{name}@v1.0.0", "-m",
         "first registered version"], project)
    run(["git", "remote", "add", "origin", str(origin)], project)
    run(["git", "push", "-q", "--follow-tags", "origin", "main"], project)
    dvc("push", cwd=project)

    elsewhere = tmp_path / "elsewhere"  # outside the clone, not a git or DVC repository
    elsewhere.mkdir()
    dvc("artifacts", "get", str(origin), name, cwd=elsewhere)
    dvc("get", str(origin), f"models/{DATASET}/mlp.pt", "-o", "by-path.pt", cwd=elsewhere)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["by-path.pt", "mlp.pt"]
    assert (elsewhere / "mlp.pt").read_bytes() == (elsewhere / "by-path.pt").read_bytes() == weights.read_bytes()

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(elsewhere / "digit.png")
    done = subprocess.run([sys.executable, "-m", "src.predict", "--weights", str(elsewhere / "mlp.pt"),
                           str(elsewhere / "digit.png"), "--format", "json"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and '"class"' in done.stdout, done.stderr
