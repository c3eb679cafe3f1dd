"""End to end: `dvc repro` on tiny params in a temporary git repository, as a user drives it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import (DATASET, another_value, committed_params_dict, copy_project, dvc, edit_params, git_commit, run,
                      stages_run)
from pipeline.outcomes import decode

pytestmark = pytest.mark.e2e
MLP_LR, LENET_LR = (committed_params_dict()["models"][name]["lr"] for name in ("mlp", "lenet"))


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
        details = json.loads((results / "details.json").read_text())
        assert 0.5 < metrics["accuracy"] <= 1.0, f"{model}: accuracy {metrics['accuracy']} after one epoch"
        assert len(json.loads((results / "confusion.json").read_text())) == details["num_images"]
        assert set(details["rotation_accuracy"]) == {"0", "45", "90"}
        assert metrics["accuracy_rotated_45"] == details["rotation_accuracy"]["45"]
        for name in ("accuracy", "loss", "accuracy_rotated_45"):  # 95% intervals, detail not headline
            interval = details["intervals"][name]
            assert interval["low"] <= metrics[name] == interval["estimate"] <= interval["high"], (model, name)
        outcomes = decode(json.loads((results / "correct.json").read_text()))
        assert len(outcomes.correct) == details["num_images"] and outcomes.correct.mean() == metrics["accuracy"]
        train = json.loads((results / "train" / "metrics.json").read_text())
        assert set(train) == {"best_epoch", "precision", "train_time_s", "step"}
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
    # another lr; the checkpoint interval changes no result
    edit_params(repo, mlp__lr=another_value(MLP_LR, 0.2), checkpoint_every_s=0.0)

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
    for stage in ("train", "evaluate", "plot"):  # git-tracked outputs and all
        assert f"Stage '{stage}@{DATASET}-mlp' is cached - skipping run" in output, output
    assert json.loads((repo / "results" / DATASET / "mlp" / "metrics.json").read_text()) == before
    assert json.loads(dvc("metrics", "diff", "--json", cwd=repo)) == {}


def page_plots(page: str) -> dict[str, list[dict]]:
    """title -> data values of every Vega-Lite plot on a `dvc plots show` page (each is a `var spec = {...}`)."""
    decoder, plots = json.JSONDecoder(), {}
    for found in re.finditer(r"var spec = ", page):
        spec = decoder.raw_decode(page, found.end())[0]
        title = spec["title"]["text"] if isinstance(spec["title"], dict) else spec["title"]
        plots[title] = spec["data"]["values"]
    return plots


def test_dvc_tools_render(repo: Path) -> None:
    """`dvc exp show` lists the workspace with the params it ran and the metrics the stages wrote; the
    `dvc plots show` page draws each model's curves, confusion and rotation data, and the report's figures."""
    (shown,) = [entry for entry in json.loads(dvc("exp", "show", "--json", cwd=repo)) if entry["rev"] == "workspace"]
    metrics, params = shown["data"]["metrics"], shown["data"]["params"]["params.yaml"]["data"]
    assert params["run"]["models"] == ["mlp", "lenet"] and params["evaluate"]["rotations"] == [0, 45, 90]
    dvc("plots", "show", "-o", str(repo / "dvc_plots"), cwd=repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    plots = page_plots(page)
    for model in ("mlp", "lenet"):
        assert params["models"][model]["epochs"] == 1
        results = repo / "results" / DATASET / model
        for path in (results / "metrics.json", results / "train" / "metrics.json"):
            assert metrics[str(path.relative_to(repo))]["data"] == json.loads(path.read_text()), path
        for curve in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
            tsv = results / "train" / "plots" / "metrics" / f"{curve}.tsv"
            rows = [tuple(line.split("\t")[-2:]) for line in tsv.read_text().splitlines()[1:]]  # (step, value)
            drawn = plots[str(tsv.relative_to(repo))]
            assert [(d["step"], d[curve.split("/")[1]]) for d in drawn] == rows, tsv
        confusion = json.loads((results / "confusion.json").read_text())
        assert sorted((d["actual"], d["predicted"]) for d in plots[f"{DATASET}/{model} test confusion"]) == sorted(
            (d["actual"], d["predicted"]) for d in confusion)
        details = json.loads((results / "details.json").read_text())
        assert {d["degrees"]: d["accuracy"] for d in plots[f"{DATASET}/{model} test accuracy, images rotated"]} == {
            float(degrees): accuracy for degrees, accuracy in details["rotation_accuracy"].items()}
    assert {d["series"] for d in plots["Validation loss per epoch"]} == {f"{DATASET}/mlp", f"{DATASET}/lenet"}
    for figure in (f"{DATASET}-curves.png", f"{DATASET}-rotation.png"):
        assert f'<img src="static/workspace_reports_figures_{figure}"' in page
        assert (repo / "dvc_plots" / "static" / f"workspace_reports_figures_{figure}").stat().st_size > 0


def test_second_commit_compares_from_a_fresh_clone(repo: Path, tmp_path: Path) -> None:
    """A second commit with other mlp results: `dvc plots diff HEAD~1` overlays both revisions' training
    curves of every model and shows both revisions' confusion matrices. A fresh clone, with an empty
    DVC cache and no remote, compares the two commits from git alone; its `dvc repro` (everything
    again, from the raw data) changes no git-tracked byte outside the machine-dependent timing fields."""
    edit_params(repo, mlp__lr=another_value(MLP_LR, 0.4))
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

        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
        assert not (clone / ".dvc" / "cache").exists()
        compare_from_git(clone)
        rerun_changes_only_timings(clone)
    finally:
        run(["git", "reset", "-q", "--hard", "HEAD~1"], repo)  # other tests see the baseline again
        dvc("checkout", "-q", cwd=repo)


def compare_from_git(clone: Path) -> None:
    """`dvc metrics diff`, `dvc exp show` and `dvc plots diff` of HEAD~1 and HEAD, in a clone whose DVC
    cache is empty: every model's metrics and curves of both revisions, no load failure."""
    metric_files = {f"results/{DATASET}/{model}/{name}" for model in ("mlp", "lenet")
                    for name in ("metrics.json", "train/metrics.json")}
    diff = run([sys.executable, "-m", "dvc", "metrics", "diff", "HEAD~1", "--all", "--json"], clone)
    assert "failed to load" not in diff, diff
    diff = json.loads(diff)
    assert set(diff) == metric_files
    for path, values in diff.items():
        assert values and all(v["old"] is not None and v["new"] is not None for v in values.values()), path
    assert diff[f"results/{DATASET}/mlp/metrics.json"]["accuracy"]["diff"] != 0  # mlp's lr changed

    shown = run([sys.executable, "-m", "dvc", "exp", "show", "--json", "-n", "2"], clone)
    assert "failed to load" not in shown and "!" not in shown, shown
    revisions = json.loads(shown)
    assert [entry["rev"] for entry in revisions][0] == "workspace" and len(revisions) == 3  # and 2 commits
    for entry in revisions:
        assert entry["error"] is None, entry
        metrics = entry["data"]["metrics"]
        assert set(metrics) == metric_files, entry["rev"]
        for path, loaded in metrics.items():
            assert "error" not in loaded and loaded["data"], (entry["rev"], path)
        # headline numbers only: what `dvc exp show` lists stays narrow
        assert sum(len(loaded["data"]) for loaded in metrics.values()) <= 9 * 2

    plots = run([sys.executable, "-m", "dvc", "plots", "diff", "HEAD~1", "--json"], clone)
    assert "failed to load" not in plots, plots
    data = json.loads(plots)["data"]
    for model in ("mlp", "lenet"):
        for curve in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
            (plot,) = data[f"results/{DATASET}/{model}/train/plots/metrics/{curve}.tsv"]
            values = plot["content"]["data"]["values"]
            assert {datum["rev"] for datum in values} == {"HEAD~1", "workspace"}, (model, curve)
        (rotation,) = data[f"results/{DATASET}/{model}/details.json"]
        assert {(datum["rev"], datum["degrees"]) for datum in rotation["content"]["data"]["values"]} == {
            (rev, degrees) for rev in ("HEAD~1", "workspace") for degrees in (0, 45, 90)}
    (curves,) = data["Validation loss per epoch"]
    assert {(datum["rev"], datum["series"]) for datum in curves["content"]["data"]["values"]} == {
        (rev, f"{DATASET}/{model}") for rev in ("HEAD~1", "workspace") for model in ("mlp", "lenet")}


# The machine-dependent numbers, listed in README.md ("What is cached where"): every other byte that
# git tracks is the same on a rerun of the same params on the same machine.
TIMING_FIELDS = {"train_time_s", "throughput_images_per_s"}


def without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items() if key not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def lock_without_timings(lock: dict, timed: set[str]) -> dict:
    """dvc.lock without the hashes of files that hold a timing field, and of folders holding one."""
    def entry(item: dict) -> dict:
        path = item["path"]
        if any(file == path or file.startswith(f"{path}/") for file in timed):
            return {"path": path}
        return item

    return {**lock, "stages": {name: {key: [entry(i) for i in value] if key in ("deps", "outs") else value
                                      for key, value in stage.items()}
                               for name, stage in lock["stages"].items()}}


def rerun_changes_only_timings(clone: Path) -> None:
    """`dvc repro` in `clone` (nothing cached: every stage runs) leaves git status with changes only to
    timing fields; a forced rerun of evaluate writes the same predictions, so plot does not rerun."""
    ran = stages_run(dvc("repro", cwd=clone))
    assert {f"train@{DATASET}-mlp", f"plot@{DATASET}-lenet", "report"} <= ran
    changed = run(["git", "status", "--porcelain", "--untracked-files=all"], clone).splitlines()
    timed = {line[3:] for line in changed if line[3:].endswith(".json")}
    yaml = YAML(typ="safe")
    for line in changed:
        status, path = line[:2], line[3:]
        assert status == " M", f"{line}: a rerun added or removed a git-tracked file"
        committed = run(["git", "show", f"HEAD:{path}"], clone)
        now = (clone / path).read_text()
        if path.endswith(".json"):
            before, after = json.loads(committed), json.loads(now)
            assert before != after and without_timings(before) == without_timings(after), path
        elif path == "dvc.lock":
            assert lock_without_timings(yaml.load(committed), timed) == lock_without_timings(yaml.load(now), timed)
        else:
            raise AssertionError(f"{path} changed on a rerun of the same params")

    output = dvc("repro", "-f", "-s", f"evaluate@{DATASET}-mlp", cwd=clone)
    assert stages_run(output) == {f"evaluate@{DATASET}-mlp"}
    ran = stages_run(dvc("repro", cwd=clone))
    assert f"plot@{DATASET}-mlp" not in ran, "evaluate's outputs changed on a forced rerun"
    assert ran <= {"report"}  # results/ holds the new throughput; the report it writes is the same


def test_grid_search_on_the_queue(repo: Path) -> None:
    """Two learning rates of lenet queued, run by two workers in DVC's temporary workspaces
    (.dvc/tmp/exps/), then listed by `dvc exp show` with their metrics; the workspace is untouched."""
    before = run(["git", "status", "--porcelain"], repo)
    lrs = [another_value(LENET_LR, 1 / 3), another_value(LENET_LR, 2 / 3)]
    output = dvc("exp", "run", "--queue", "-S", f"models.lenet.lr={lrs[0]},{lrs[1]}", cwd=repo)
    assert output.count("Queued experiment") == 2, output
    try:
        dvc("queue", "start", "-j", "2", cwd=repo)
        deadline = time.monotonic() + 600
        while True:
            status = dvc("queue", "status", cwd=repo)
            tasks = [line.split() for line in status.splitlines()[1:] if line and not line.startswith("Worker")]
            if all(task[-1] in ("Success", "Failed") for task in tasks) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert [task[-1] for task in tasks] == ["Success", "Success"], status
    finally:
        dvc("queue", "stop", "--kill", cwd=repo)
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo))
    experiments = [exp for entry in shown for exp in entry.get("experiments") or [] if entry["rev"] != "workspace"]
    accuracies = {}
    for experiment in experiments:
        (revision,) = experiment["revs"]
        data = revision["data"]
        lenet = data["metrics"][f"results/{DATASET}/lenet/metrics.json"]["data"]
        assert 0 < lenet["accuracy"] <= 1 and data["metrics"][f"results/{DATASET}/lenet/train/metrics.json"]["data"]
        accuracies[data["params"]["params.yaml"]["data"]["models"]["lenet"]["lr"]] = lenet["accuracy"]
    assert set(accuracies) == set(lrs), accuracies
    assert run(["git", "status", "--porcelain"], repo) == before

    # `python -m src.compare` finds DVC's experiments by name, through git alone
    names = [experiment.get("name") or experiment["revs"][0]["name"] for experiment in experiments]
    compared = run([sys.executable, "-m", "src.compare", *names], repo)
    assert compared.startswith(f"A = {names[0]} (") and f"{DATASET}/lenet " in compared, compared
    (mlp,) = [line for line in compared.splitlines() if line.startswith(f"{DATASET}/mlp ")]
    assert "+0.0000" in mlp and mlp.endswith("no detectable difference at 5%"), mlp  # mlp did not change


def test_killed_train_stage_resumes_to_the_same_result(repo: Path) -> None:
    """SIGKILL the train stage (dvc and its child) after an epoch checkpoint; the next `dvc repro`
    resumes and ends with the weights and training log of a run that was never stopped. (Last in the
    module: it leaves the workspace changed.)"""
    # settings no run-cache entry holds; ~0.1 s per epoch, a checkpoint after each
    edit_params(repo, mlp__epochs=40, mlp__lr=another_value(MLP_LR, 0.4), checkpoint_every_s=0.0)
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
