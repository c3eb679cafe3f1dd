"""docs/results.md is what tools.results_page writes from the committed results and bench runs, and every
figure a page quotes from a committed file equals that file; the check itself catches a stale page, a
stale quote and a bench without a saved run; bench.common.save_results records command and machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from pipeline.runtime import UserError
from tools import results_page
from tools.results_page import Tree, check, render


def committed_tree() -> Tree:
    """The repository as committed (HEAD): a local `dvc repro` or bench run must not fail the suite.
    Outside a git checkout, the files themselves."""
    inside = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=REPO_ROOT, capture_output=True)
    return Tree(REPO_ROOT, "HEAD" if inside.returncode == 0 else None)


def test_committed_results_page_and_quotes_are_current() -> None:
    check(committed_tree())  # raises UserError naming the fix: python -m tools.results_page


def project(root: Path, accuracy: float = 0.968) -> Tree:
    """A minimal project: one model's results, one bench with a saved run and one without."""
    folder = root / "results" / "ds" / "tiny"
    (folder / "train").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "loss": 0.12, "ece": 0.01,
                                                      "accuracy_rotated_45": 0.5}))
    (folder / "details.json").write_text(json.dumps({"num_parameters": 1234, "rotation_accuracy": {"0": accuracy,
                                                                                                  "45": 0.5}}))
    (folder / "train" / "metrics.json").write_text(json.dumps({"best_epoch": 2, "precision": "fp32", "step": 2}))
    (root / "bench" / "results").mkdir(parents=True)
    (root / "bench" / "fast.py").write_text('"""Fast: ours against theirs, same run."""\n')
    (root / "bench" / "slow.py").write_text('"""Slow: never run yet."""\n')
    (root / "bench" / "results" / "fast.json").write_text(json.dumps({
        "command": "python -m bench.fast --n 3", "date": "2026-01-01",
        "machine": {"cpu": "Some CPU", "cores": 2, "torch": "2.x", "threads": 2, "load_1min": 5.0},
        "figures": {"ratio": 12.5, "inner": {"seconds": 0.25, "not reached": None}}}))
    (root / "docs").mkdir()
    return Tree(root)


def test_page_holds_every_figure_with_command_and_machine(tmp_path: Path) -> None:
    page = render(project(tmp_path))
    assert "| ds | tiny | 0.968 | 0.12 | 0.01 | 0.5 | 1,234 | 2 / 3 | fp32 | not in dvc.lock |" in page
    assert "`python -m bench.fast --n 3`, 2026-01-01; Some CPU, 2 cores" in page
    assert "other jobs shared the machine" in page  # load 5 on 2 cores
    assert "| ratio | 12.5 |" in page and "| inner / seconds | 0.25 |" in page
    assert "| inner / not reached | not reached |" in page
    assert "- `slow`: Slow: never run yet" in page  # no saved run: listed with its command's name


def test_check_fails_on_a_stale_page(tmp_path: Path) -> None:
    tree = project(tmp_path)
    (tmp_path / "docs" / "results.md").write_text(render(tree))
    check(Tree(tmp_path))
    project(tmp_path / "other", accuracy=0.97)  # the same project with another result...
    (tmp_path / "results" / "ds" / "tiny" / "metrics.json").write_text(
        (tmp_path / "other" / "results" / "ds" / "tiny" / "metrics.json").read_text())
    with pytest.raises(UserError, match="python -m tools.results_page"):  # ...and the old page
        check(Tree(tmp_path))


def test_check_fails_on_a_stale_quote(tmp_path: Path) -> None:
    tree = project(tmp_path)
    (tmp_path / "docs" / "results.md").write_text(render(tree))
    link = '[{}](../results/ds/tiny/metrics.json "accuracy") and [12.5](../bench/results/fast.json "figures.ratio")'
    (tmp_path / "docs" / "page.md").write_text(link.format("0.968"))
    check(Tree(tmp_path))
    (tmp_path / "docs" / "page.md").write_text(link.format("0.9680"))  # more decimals, the same figure
    check(Tree(tmp_path))
    (tmp_path / "docs" / "page.md").write_text(link.format("0.8947"))
    with pytest.raises(UserError, match=r"docs/page.md: quotes 0.8947 .* which holds 0.968"):
        check(Tree(tmp_path))
    (tmp_path / "README.md").write_text('[1](results/ds/tiny/metrics.json "no.such.key")')
    (tmp_path / "docs" / "page.md").write_text(link.format("0.968"))
    with pytest.raises(UserError, match="README.md: quotes 1 .* no such figure"):
        check(Tree(tmp_path))


def test_command_line_check_is_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tools.results_page", "--check", "--rev", "no-such-revision"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")], done.stderr


def test_save_results_records_command_and_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import common

    monkeypatch.setattr(common, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench/fast.py", "--models", "mlp"])
    monkeypatch.delenv("MNIST_PIPELINE_MIRROR", raising=False)
    path = common.save_results("fast", {"ratio": 2.0})
    record = json.loads(path.read_text())
    assert path == tmp_path / "bench" / "results" / "fast.json"
    assert record["command"] == "python -m bench.fast --models mlp"
    assert record["figures"] == {"ratio": 2.0}
    assert {"cpu", "cores", "torch", "threads", "load_1min"} <= set(record["machine"])
    assert results_page.number(record["figures"]["ratio"]) == "2"


@pytest.mark.parametrize(("flip", "named"), [("auto", ""), (True, ", flip"), (False, ", no flip")])
def test_recipe_names_a_forced_flip_only(flip: object, named: str) -> None:
    """`augment_flip: auto` flips only where the dataset allows it: the recipe column must not claim a flip."""
    section = {"epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.1, "augment_flip": flip}
    assert results_page.recipe(section) == "2 epochs, batch 8, sgd, lr 0.1, constant" + named
