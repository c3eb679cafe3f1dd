"""Many experiments on several machines (docs/scaling.md): three clones of one project act as machines that
share a bare git `origin` and a folder DVC remote. A runs its half of a four-point grid on the experiment
queue, two experiments at once (`dvc queue start -j 2`), each training with two processes; B runs its half
as one `dvc exp run` per scheduler job. Both push (`dvc exp push`, `dvc push --run-cache`); C pulls, `dvc exp
show` lists all four with their metrics, and C applies one of B's points and reproduces it without training."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import psutil
import pytest

from conftest import DATASET, committed_params_dict, dvc, git_commit, run, stages_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
QUEUE_TIMEOUT_S = 1200


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd)


def machine(origin: Path, name: str) -> Path:
    """A clone of origin with its data pulled from the DVC remote: a machine ready to run experiments."""
    repo = origin.parent / name
    git("clone", "-q", str(origin), str(repo), cwd=origin.parent)
    git("config", "user.name", name, cwd=repo)
    git("config", "user.email", f"{name}@example.com", cwd=repo)
    dvc("pull", "--run-cache", cwd=repo)
    return repo


def wait_for_queue(repo: Path) -> str:
    """`dvc queue status` once no task is queued or running (bounded by QUEUE_TIMEOUT_S)."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        status = dvc("queue", "status", cwd=repo)
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"the queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}"
        time.sleep(5)


def processes_under(folder: Path) -> list[psutil.Process]:
    """Processes whose working directory lies in `folder` (the queue's workers and their tasks)."""
    found = []
    for process in psutil.process_iter():
        try:
            if Path(process.cwd()).is_relative_to(folder):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def test_grid_over_three_machines(tiny_trained_repo: Path, tmp_path: Path) -> None:
    origin, storage = tmp_path / "origin.git", tmp_path / "storage"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    first = tmp_path / "first"
    shutil.copytree(tiny_trained_repo, first, symlinks=True)
    dvc("remote", "add", "-d", "storage", str(storage), cwd=first)
    git_commit(first, "DVC remote")
    git("remote", "add", "origin", str(origin), cwd=first)
    git("push", "-q", "origin", "main", cwd=first)
    dvc("push", "--run-cache", cwd=first)

    lr = committed_params_dict()["models"]["mlp"]["lr"]
    grid = [(f"{lr * factor:.3g}", hidden) for factor in (0.5, 2.0) for hidden in ("[32]", "[64]")]
    a, b, c = (machine(origin, name) for name in "abc")

    # A: its half on the queue, two experiments at once, each training with two processes
    try:
        for point_lr, hidden in grid[:2]:
            dvc("exp", "run", "--queue", "-S", f"models.mlp.lr={point_lr}", "-S", f"models.mlp.arch.hidden={hidden}",
                "-S", "distributed.nproc_per_node=2", cwd=a)
        dvc("queue", "start", "-j", "2", cwd=a)
        status = wait_for_queue(a)
    finally:
        dvc("queue", "stop", "--kill", cwd=a)
        deadline = time.monotonic() + 60
        while (left := [p for p in processes_under(a) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]):
            if time.monotonic() > deadline:
                for process in left:
                    process.kill()
                break
            time.sleep(1)
    print(f"--- machine a: dvc queue status\n{status}")
    assert status.count("Success") == 2, status
    # B: one `dvc exp run` per point, as one scheduler job each would
    for point_lr, hidden in grid[2:]:
        ran = stages_run(dvc("exp", "run", "-S", f"models.mlp.lr={point_lr}", "-S", f"models.mlp.arch.hidden={hidden}",
                             cwd=b))
        assert f"train@{DATASET}-mlp" in ran
    for repo in (a, b):
        dvc("exp", "push", "origin", cwd=repo)
        dvc("push", "--run-cache", cwd=repo)

    # C sees all four, with their metrics, without running any
    dvc("exp", "pull", "origin", cwd=c)
    table = dvc("exp", "show", "--md", "--only-changed", "--drop", "Created|precision|step|ece|throughput", cwd=c)
    print(f"--- machine c: dvc exp show --md --only-changed\n{table}")
    experiments = {rev["name"]: rev["data"] for baseline in json.loads(dvc("exp", "show", "--json", cwd=c))
                   for exp in baseline.get("experiments") or [] for rev in exp["revs"]}
    points = {name: (str(exp["params"]["params.yaml"]["data"]["models"]["mlp"]["lr"]),
                     str(exp["params"]["params.yaml"]["data"]["models"]["mlp"]["arch"]["hidden"]).replace(" ", ""))
              for name, exp in experiments.items()}
    assert set(points.values()) == {(str(float(point_lr)), hidden) for point_lr, hidden in grid}, points
    for exp in experiments.values():
        metrics = exp["metrics"][f"results/{DATASET}/mlp/metrics.json"]["data"]
        assert 0 < metrics["accuracy"] <= 1, metrics

    # C takes one of B's points without training: its commit holds its dvc.lock and git-tracked metrics, the DVC
    # remote its weights and figures. (DVC's run-cache alone cannot give a train stage to another machine: the
    # stage's `cache: false` metrics never reach the remote; docs/scaling.md.)
    name = next(name for name, point in points.items() if point == (str(float(grid[3][0])), grid[3][1]))
    dvc("exp", "apply", name, cwd=c)
    dvc("pull", cwd=c)
    output = dvc("repro", cwd=c)
    print(f"--- machine c: dvc exp apply {name} && dvc pull && dvc repro\n{output}")
    assert stages_run(output) == set(), output
