"""`python -m src.compare` as a user runs it, in a temporary git repository holding only results files (no
DVC, no cache, no remote): two commits, the workspace, DVC-style experiment refs, seed groups, a fresh clone."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO_ROOT, git_commit, one_error, run, run_module
from pipeline.outcomes import Outcomes, encode
from pipeline.runtime import run_stage
from pipeline.stats import compare, wilson
from src.compare import main

N = 1000
LABELS = np.arange(N) % 10


def write_model(repo: Path, model: str, correct: np.ndarray, test_set: str = "sha256:test", loss: float = 0.2) -> None:
    folder = repo / "results" / "ds" / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "correct.json").write_text(json.dumps(encode(Outcomes(test_set, correct), LABELS, list("0123456789"))))
    accuracy = float(correct.mean())
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "loss": loss, "throughput_images_per_s": 9.0}))
    interval = wilson(int(correct.sum()), len(correct))
    (folder / "details.json").write_text(json.dumps({"intervals": {
        "accuracy": {"estimate": accuracy, "low": interval.low, "high": interval.high},
        "loss": {"estimate": loss, "low": loss - 0.02, "high": loss + 0.03}}}))


def write_params(repo: Path, seed: int = 0, lr: float = 0.1) -> None:
    (repo / "params.yaml").write_text(f"seed: {seed}  # training seed\nmodels:\n  mlp:\n    lr: {lr}\n")


def compare_in(repo: Path, *args: str) -> SimpleNamespace:
    """`python -m src.compare ARGS` in `repo`, run in this process (a process per call is slow on a busy
    machine; test_two_commits_from_a_fresh_clone runs the real command)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.chdir(repo)
        patch.setattr(sys, "argv", ["compare", *args])
        try:
            run_stage(main)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def command_in(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it in `repo`, with this project's code on the path."""
    return run_module("src.compare", *args, cwd=repo, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def row(output: str, key: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(key)]
    return line


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Commit 1: mlp and lenet; commit 2: mlp right on 40 more images, lenet on another test set, resnet new."""
    repo = tmp_path_factory.mktemp("history")
    run(["git", "init", "-q", "-b", "main"], repo)
    (repo / "README").write_text("no results yet\n")
    git_commit(repo, "before any results")
    rng = np.random.default_rng(0)
    mlp = rng.random(N) < 0.9
    better = mlp.copy()
    better[np.flatnonzero(~mlp)[:40]] = True
    lenet = rng.random(N) < 0.95
    write_params(repo)
    write_model(repo, "mlp", mlp)
    write_model(repo, "lenet", lenet)
    git_commit(repo, "first results")
    write_model(repo, "mlp", better)
    write_model(repo, "lenet", lenet, test_set="sha256:another-split")
    write_model(repo, "resnet", lenet)
    git_commit(repo, "second results")
    return repo, {"mlp": mlp, "better": better}


def test_two_commits_from_a_fresh_clone(history: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    repo, correct = history
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / ".dvc").exists()
    done = command_in(clone, "HEAD~1", "HEAD")
    assert done.returncode == 0, done.stderr
    expected = compare(correct["mlp"], correct["better"])
    mlp = row(done.stdout, "ds/mlp")
    for cell in (expected.a.format(), expected.b.format(), expected.difference.format(sign=True), " 0 ", " 40 ",
                 f"{expected.p:.3g}", "better"):
        assert cell in mlp, (cell, mlp)
    assert "ds/lenet: refused: the test sets differ" in done.stdout
    assert "ds/resnet: only in B" in done.stdout
    assert done.stdout.startswith("A = HEAD~1 (") and ", B = HEAD (" in done.stdout.splitlines()[0]

    backwards = compare_in(clone, "HEAD", "HEAD~1")
    assert "worse" in row(backwards.stdout, "ds/mlp")


def test_workspace_against_head_by_default(history: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    repo, correct = history
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    same = compare_in(clone)
    assert same.stdout.startswith("A = HEAD (") and "B = workspace" in same.stdout.splitlines()[0]
    assert "no detectable difference at 5%" in row(same.stdout, "ds/mlp")
    write_model(clone, "mlp", correct["mlp"])  # the workspace goes back to the first results
    assert "worse" in row(compare_in(clone).stdout, "ds/mlp")
    assert "no detectable difference" in row(compare_in(clone, "HEAD~1").stdout, "ds/mlp")  # HEAD~1 vs workspace
    # an experiment of mlp alone (`-S 'run.models=[mlp]'`) still holds the older files of the other models
    (clone / "params.yaml").write_text("seed: 0\nrun:\n  datasets: [ds]\n  models: [mlp]\n")
    only_mlp = compare_in(clone).stdout
    assert "ds/lenet: only in A" in only_mlp and "ds/resnet: only in A" in only_mlp and row(only_mlp, "ds/mlp")


@pytest.mark.parametrize(("args", "fragments"), [
    (["no-such-rev"], ["no-such-rev: no git revision or DVC experiment of that name"]),
    (["HEAD~2", "HEAD"], ["HEAD~2", "no results/<dataset>/<model>/correct.json"]),
    (["HEAD~1", "HEAD", "HEAD"], ["two revisions"]),
])
def test_bad_revisions_are_one_error(history: tuple[Path, dict[str, np.ndarray]], args: list[str],
                                     fragments: list[str]) -> None:
    repo, _ = history
    done = compare_in(repo, *args)
    one_error(done.returncode, done.stderr, *fragments)
    assert done.stdout == ""


def test_outside_git_and_corrupt_file(tmp_path: Path, history: tuple[Path, dict[str, np.ndarray]]) -> None:
    outside = compare_in(tmp_path)
    one_error(outside.returncode, outside.stderr, "not inside a git repository")
    repo, _ = history
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    (clone / "results" / "ds" / "mlp" / "correct.json").write_text('{"test_set": "x", "num_images": 5, "correct": ""}')
    done = compare_in(clone)
    one_error(done.returncode, done.stderr, "workspace: results/ds/mlp/correct.json: unreadable")


def experiment(repo: Path, name: str, seed: int, lr: float, correct: np.ndarray, test_set: str = "sha256:test") -> str:
    """A DVC-style experiment: a commit on top of HEAD, kept only as refs/exps/<HEAD[:2]>/<HEAD[2:]>/<name>."""
    head = run(["git", "rev-parse", "HEAD"], repo).strip()
    run(["git", "checkout", "-q", "--detach"], repo)
    write_params(repo, seed=seed, lr=lr)
    write_model(repo, "mlp", correct, test_set, loss=0.2 + seed / 100)
    write_model(repo, "lenet", np.roll(correct, seed + 1), test_set, loss=0.3)
    git_commit(repo, f"experiment {name}")
    commit = run(["git", "rev-parse", "HEAD"], repo).strip()
    run(["git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/{name}", commit], repo)
    run(["git", "checkout", "-q", "main"], repo)
    return commit


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    repo = tmp_path_factory.mktemp("experiments")
    run(["git", "init", "-q", "-b", "main"], repo)
    rng = np.random.default_rng(1)
    write_params(repo)
    write_model(repo, "mlp", rng.random(N) < 0.9)
    git_commit(repo, "baseline")
    runs = [rng.random(N) < accuracy for accuracy in (0.90, 0.92, 0.91)]
    for seed, correct in enumerate(runs):
        experiment(repo, f"seed-{seed}", seed, 0.1, correct)
    experiment(repo, "faster", 0, 0.5, runs[0])
    experiment(repo, "seed-0-again", 0, 0.1, runs[0])  # a repeat: DVC keeps both
    return repo, runs


def test_experiment_names_resolve_through_refs(experiments: tuple[Path, list[np.ndarray]]) -> None:
    repo, runs = experiments
    done = compare_in(repo, "seed-0", "seed-1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A = seed-0 (") and compare(runs[0], runs[1]).difference.format(sign=True) in \
        row(done.stdout, "ds/mlp")


def test_seed_group_found_on_head(experiments: tuple[Path, list[np.ndarray]]) -> None:
    repo, runs = experiments
    done = compare_in(repo, "--seeds")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Seed group of 3: seed-0 (seed 0), seed-1 (seed 1), seed-2 (seed 2)\n")
    assert "faster" not in out  # another lr: not in the group
    accuracies = [float(r.mean()) for r in runs]
    line = row(out, "ds/mlp")
    assert f"{np.mean(accuracies):.4f}" in line and f"{np.std(accuracies, ddof=1):.4f}" in line
    half_widths = [(wilson(int(r.sum()), N).high - wilson(int(r.sum()), N).low) / 2 for r in runs]
    assert f"{np.mean(half_widths):.4f}" in line
    lenet_loss, mlp_loss = [line.split() for line in out.splitlines() if line.split()[:1] == ["loss"]]
    assert mlp_loss == ["loss", "0.2100", "0.0100", "0.0250"]  # 0.2 + seed / 100; half of [-0.02, +0.03]
    assert "throughput" not in out  # a property of the machine, not of the seed
    assert "seed-0-again: the same params as seed-0, seed included; left out" in out
    assert "ds: mlp - lenet:" in out or "ds: lenet - mlp:" in out


def test_seed_group_named_and_refused(experiments: tuple[Path, list[np.ndarray]]) -> None:
    repo, _ = experiments
    named = compare_in(repo, "--seeds", "seed-0", "seed-2")
    assert named.returncode == 0 and named.stdout.startswith("Seed group of 2")
    mixed = compare_in(repo, "--seeds", "seed-0", "seed-1", "faster")
    one_error(mixed.returncode, mixed.stderr, "faster", "differ", "models.mlp.lr", "not only in seed")
    twice = compare_in(repo, "--seeds", "seed-0", "seed-0")
    one_error(twice.returncode, twice.stderr, "seed 0 appears twice")
    empty = repo.parent / "no-experiments"
    empty.mkdir(exist_ok=True)
    run(["git", "init", "-q"], empty)
    write_params(empty)
    git_commit(empty, "nothing")
    done = compare_in(empty, "--seeds")
    one_error(done.returncode, done.stderr, "dvc exp run --queue -S seed=0,1,2")


def test_an_ambiguous_experiment_name(experiments: tuple[Path, list[np.ndarray]]) -> None:
    repo, _ = experiments
    other = run(["git", "rev-parse", "main"], repo).strip()
    ref = f"refs/exps/00/{'0' * 38}/seed-1"  # the same name run on another baseline
    run(["git", "update-ref", ref, other], repo)
    try:
        done = compare_in(repo, "seed-1")
        one_error(done.returncode, done.stderr, "seed-1: several experiments have this name", other[:7])
    finally:
        run(["git", "update-ref", "-d", ref], repo)


def test_seed_group_member_on_another_test_set(experiments: tuple[Path, list[np.ndarray]], tmp_path: Path) -> None:
    repo, runs = experiments
    head = run(["git", "rev-parse", "HEAD"], repo).strip()
    commit = experiment(repo, "seed-7", 7, 0.1, runs[0], "sha256:another-split")  # another test set
    commit_ref = f"refs/exps/{head[:2]}/{head[2:]}/seed-7"
    try:
        done = compare_in(repo, "--seeds", "seed-0", "seed-1", "seed-7")
        assert done.returncode == 0, done.stderr
        assert "ds/mlp: refused: the members' test sets differ" in done.stdout and commit
        assert "ds: " not in done.stdout  # no pair of models compared across the two test sets
    finally:
        run(["git", "update-ref", "-d", commit_ref], repo)
