"""End to end: `dvc repro` on tiny params in a temporary git repository, as a user drives it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import committed_params_text

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pipeline", "src", "templates", ".gitignore", ".dvcignore",
                 "data/folders"]
DATASET = "mnist-5k"

pytestmark = pytest.mark.e2e


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
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, repo / name)
    (repo / "params.yaml").write_text(committed_params_text())  # not the workspace's (maybe edited) copy
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + DVC repository holding the project, with tiny params, reproduced and committed."""
    repo = copy_project(tmp_path_factory.mktemp("project"))
    run(["git", "init", "-q"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.analytics", "false", cwd=repo)
    edit_params(repo, run__models=["mlp", "lenet"])  # two models exercise the matrix, whatever the default
    for model in ("mlp", "lenet"):
        edit_params(repo, **{f"{model}__epochs": 1})
    edit_params(repo, evaluate__rotations=[0, 45, 90], evaluate__embedding_points=100)  # keep t-SNE quick
    git_commit(repo, "project")

    output = dvc("repro", cwd=repo)
    assert {f"train@{DATASET}-mlp", f"train@{DATASET}-lenet", "report"} <= stages_run(output)
    git_commit(repo, "baseline run")
    return repo


def test_outputs_are_written(repo: Path) -> None:
    for model in ("mlp", "lenet"):
        results = repo / "results" / DATASET / model
        metrics = json.loads((results / "metrics.json").read_text())
        assert 0.5 < metrics["accuracy"] <= 1.0, f"{model}: accuracy {metrics['accuracy']} after one epoch"
        assert len(json.loads((results / "confusion.json").read_text())) == metrics["num_images"]
        assert set(metrics["rotation_accuracy"]) == {"0", "45", "90"}
        figures = {"curves", "confusion", "predictions", "mistakes", "reliability", "embedding"}
        figures |= {"filters"} if model == "lenet" else set()  # the first conv's kernels; the MLP has none
        assert {p.name for p in (results / "figures").iterdir()} == {f"{name}.png" for name in figures}
        assert (repo / "models" / DATASET / f"{model}.pt").stat().st_size > 0
    summary = (repo / "reports" / "summary.md").read_text()
    assert f"| {DATASET} | mlp |" in summary and f"| {DATASET} | lenet |" in summary
    for figure in (f"{DATASET}-curves.png", f"{DATASET}-rotation.png"):
        assert f"(figures/{figure})" in summary and (repo / "reports" / "figures" / figure).stat().st_size > 0


def test_one_param_change_reruns_only_that_model(repo: Path) -> None:
    before = json.loads((repo / "results" / DATASET / "mlp" / "metrics.json").read_text())
    edit_params(repo, mlp__lr=0.01, checkpoint_every_s=0.0)  # the checkpoint interval changes no result

    # Only the stage whose params changed is out of date before anything runs...
    status = json.loads(dvc("status", "--json", cwd=repo).strip().splitlines()[-1])
    assert set(status) == {f"train@{DATASET}-mlp"}, status
    # ...and reproducing reruns exactly what depends on it.
    ran = stages_run(dvc("repro", cwd=repo))
    assert ran == {f"train@{DATASET}-mlp", f"evaluate@{DATASET}-mlp", f"plot@{DATASET}-mlp", "report"}

    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo))
    changed = diff[f"results/{DATASET}/mlp/metrics.json"]
    assert changed["accuracy"]["old"] == before["accuracy"]
    assert changed["accuracy"]["new"] != before["accuracy"]
    assert f"results/{DATASET}/lenet/metrics.json" not in diff

    # Putting the old value back restores the earlier training run from the run-cache: no training.
    run(["git", "checkout", "params.yaml"], repo)
    output = dvc("repro", cwd=repo)
    assert f"Stage 'train@{DATASET}-mlp' is cached - skipping run" in output
    assert json.loads((repo / "results" / DATASET / "mlp" / "metrics.json").read_text()) == before
    assert json.loads(dvc("metrics", "diff", "--json", cwd=repo)) == {}


def test_dvc_tools_render(repo: Path) -> None:
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo))
    assert shown, "dvc exp show listed no experiment"
    dvc("plots", "show", "-o", str(repo / "dvc_plots"), cwd=repo)
    assert (repo / "dvc_plots" / "index.html").stat().st_size > 0


def test_plots_diff_between_commits(repo: Path) -> None:
    """A second commit with other mlp results: `dvc plots diff HEAD~1` overlays both revisions' training
    curves of every model and shows both revisions' confusion matrices, without errors."""
    edit_params(repo, mlp__lr=0.02)
    dvc("repro", cwd=repo)
    git_commit(repo, "mlp at another learning rate")
    try:
        plots = json.loads(dvc("plots", "diff", "HEAD~1", "--json", cwd=repo))
        assert "errors" not in plots, plots.get("errors")
        data = plots["data"]
        for title in ("Validation loss per epoch", "Validation accuracy per epoch", "Train loss per epoch",
                      "Train accuracy per epoch"):
            (plot,) = [entry for entry in data[title] if entry["type"] == "vega"]
            assert set(plot["revisions"]) == {"HEAD~1", "workspace"}
            assert "<DVC_METRIC" not in json.dumps(plot["content"]), "the template left an anchor unfilled"
            values = plot["content"]["data"]["values"]
            assert {datum["rev"] for datum in values} == {"HEAD~1", "workspace"}
            assert {f"{DATASET}/mlp", f"{DATASET}/lenet"} <= {datum["series"] for datum in values}
        for model in ("mlp", "lenet"):
            (confusion,) = data[f"results/{DATASET}/{model}/confusion.json"]
            assert set(confusion["revisions"]) == {"HEAD~1", "workspace"}
        html = repo / "dvc_plots_diff"
        output = dvc("plots", "diff", "HEAD~1", "-o", str(html), cwd=repo)
        assert "error" not in output.lower(), output
        page = (html / "index.html").read_text()
        assert "Validation loss per epoch" in page and f"{DATASET}/lenet" in page
    finally:
        run(["git", "reset", "-q", "--hard", "HEAD~1"], repo)  # other tests see the baseline again
        dvc("checkout", "-q", cwd=repo)


def test_killed_train_stage_resumes_to_the_same_result(repo: Path) -> None:
    """SIGKILL the train stage (dvc and its child) after an epoch checkpoint; the next `dvc repro`
    resumes and ends with the weights and training log of a run that was never stopped. (Last in the
    module: it leaves the workspace changed.)"""
    # settings no run-cache entry holds; ~0.1 s per epoch, a checkpoint after each
    edit_params(repo, mlp__epochs=40, mlp__lr=0.02, checkpoint_every_s=0.0)
    checkpoint = repo / ".checkpoints" / DATASET / "mlp.pt"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc_run = subprocess.Popen([sys.executable, "-m", "dvc", "repro", f"train@{DATASET}-mlp"], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and dvc_run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(dvc_run.pid, signal.SIGKILL)
    dvc_run.wait()
    import torch  # late: this module's other tests need no torch

    stopped_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= stopped_at < 40

    output = dvc("repro", f"train@{DATASET}-mlp", cwd=repo)
    assert f"after epoch {stopped_at} of 40" in output
    assert not checkpoint.exists()  # removed once the stage's outputs are written

    # The same settings, never stopped: the stage's own command, into other paths.
    run([sys.executable, "-m", "src.train", "--model", "mlp", "--parsed", f"data/parsed/{DATASET}",
         "--split", f"data/split/{DATASET}", "--out", "uninterrupted.pt", "--live", "uninterrupted"], repo)
    assert (repo / "uninterrupted.pt").read_bytes() == (repo / "models" / DATASET / "mlp.pt").read_bytes()
    live = repo / "results" / DATASET / "mlp" / "train"
    for tsv in (repo / "uninterrupted").rglob("*.tsv"):
        theirs = [line.split("\t")[1:] for line in tsv.read_text().splitlines()]  # without timestamps
        ours = [line.split("\t")[1:] for line in (live / tsv.relative_to(repo / "uninterrupted")).read_text().splitlines()]
        assert ours == theirs and len(ours) == 41, tsv.name
    metrics = [json.loads(path.read_text()) for path in (live / "metrics.json", repo / "uninterrupted" / "metrics.json")]
    assert [m.pop("train_time_s") > 0 for m in metrics] == [True, True]
    assert metrics[0] == metrics[1]
