"""docs/add-a-model.md, followed word for word in a temporary copy of the project: its `file=` blocks are
written, its `edit=` lines replace the lines they name, its `merge=` YAML goes into params.yaml, and its
`bash run` commands run (on tiny params: one epoch, mlp beside the new model). The new model trains and
evaluates, and editing its module reruns only its own stages."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import DATASET, REPO_ROOT, edit_params, stages_run

pytestmark = pytest.mark.e2e
GUIDE = REPO_ROOT / "docs" / "add-a-model.md"
BLOCK = re.compile(r"^```(\w+)[ \t]+([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)  # ```lang marker\n body ```


def guide_steps() -> list[tuple[str, str, str]]:
    """(kind, target, body) of every marked block, in order: file / edit / merge with a path, or run."""
    steps = []
    for _, marker, body in BLOCK.findall(GUIDE.read_text()):
        kind, _, target = marker.strip().partition("=")
        assert kind in ("file", "edit", "merge", "run"), f"unknown marker {marker!r} in {GUIDE.name}"
        steps.append((kind, target, body))
    return steps


def model_name() -> str:
    (path,) = [target for kind, target, _ in guide_steps() if kind == "file" and target.startswith("pipeline/models/")]
    return Path(path).stem


def apply_edit(path: Path, body: str) -> None:
    """Each line `NAME = value` of the guide replaces the file's one line assigning NAME; a tuple or list
    it replaces must keep every old item (the guide adds a name, it must not drop today's)."""
    lines = path.read_text().splitlines(keepends=True)
    for new in body.strip().splitlines():
        name = new.split("=")[0].strip()
        (index,) = [i for i, line in enumerate(lines) if re.match(rf"{re.escape(name)}\s*=", line)]
        old = ast.literal_eval(lines[index].split("=", 1)[1].split("#")[0].strip())
        if isinstance(old, (tuple, list)):
            missing = set(old) - set(ast.literal_eval(new.split("=", 1)[1].strip()))
            assert not missing, f"{GUIDE.name}'s {name} drops {missing}: update the guide"
        lines[index] = new + "\n"
    path.write_text("".join(lines))


def merge(into: Any, update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def shell(commands: str, cwd: Path) -> dict[str, str]:
    """Run each command line of a `bash run` block (comments stripped); output by command."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = {}
    for line in commands.splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if not command or command.startswith("#"):
            continue
        done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{GUIDE.name}: `{command}` failed:\n{done.stdout}\n{done.stderr}"
        outputs[command] = done.stdout + done.stderr
    return outputs


def test_the_guide_adds_a_model(tiny_trained_repo: Path, tmp_path: Path) -> None:
    repo = Path(shutil.copytree(tiny_trained_repo, tmp_path / "repo", symlinks=True))
    shutil.copytree(REPO_ROOT / "tools", repo / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    name = model_name()
    runs = []
    for kind, target, body in guide_steps():
        if kind == "file":
            (repo / target).write_text(body)
        elif kind == "edit":
            apply_edit(repo / target, body)
        elif kind == "merge":
            yaml = YAML()  # round-trip: the comments stay, as a user's editor keeps them
            params = yaml.load(repo / target)
            merge(params, YAML(typ="safe").load(body))
            yaml.dump(params, repo / target)
            edit_params(repo, run__models=["mlp", name], **{f"{name}__epochs": 1})  # tiny: one epoch beside mlp
        else:
            runs.append(body)
    assert len(runs) == 2, f"{GUIDE.name}: expected two `bash run` blocks (train it; change it)"

    # Step 4: the new model trains, evaluates and reaches the report.
    output = "".join(shell(runs[0], repo).values())
    assert {f"train@{DATASET}-{name}", f"evaluate@{DATASET}-{name}", f"plot@{DATASET}-{name}"} <= stages_run(output)
    metrics = YAML(typ="safe").load((repo / "results" / DATASET / name / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert f"| {DATASET} | {name} |" in (repo / "reports" / "summary.md").read_text()

    # Step 5: an edit of the module puts only its own stages out of date, and only they rerun.
    module = repo / "pipeline" / "models" / f"{name}.py"
    module.write_text(module.read_text().replace("nn.ReLU()", "nn.ReLU(inplace=True)"))
    status, repro = shell(runs[1], repo).values()
    out_of_date = set(re.findall(r"^([\w@.-]+):\s*$", status, re.M))
    assert out_of_date == {f"train@{DATASET}-{name}", f"evaluate@{DATASET}-{name}"}, status
    ran = stages_run(repro)
    assert f"train@{DATASET}-{name}" in ran
    assert ran <= {f"{stage}@{DATASET}-{name}" for stage in ("train", "evaluate", "plot")} | {"report"}, ran
