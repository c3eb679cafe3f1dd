"""dvc.yaml states each stage's code dependencies at the finest true grain (kept by `python -m tools.dvc_deps`),
and reads params.yaml."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO_ROOT, run_module
from pipeline.config import load_params
from pipeline.models import MODELS
from tools import dvc_deps

DVC_YAML = (REPO_ROOT / "dvc.yaml").read_text()
STAGES = YAML(typ="safe").load(DVC_YAML)["stages"]


def entry_point(stage: str) -> str:
    return re.search(r"python -m (\S+)", STAGES[stage].get("do", STAGES[stage])["cmd"]).group(1)


def code_deps(stage: str) -> set[str]:
    return {dep for dep in STAGES[stage].get("do", STAGES[stage])["deps"] if dep.endswith(".py")}


def test_code_deps_are_up_to_date() -> None:
    dvc_deps.main(["--check"])  # raises, naming the stage and the fix, if a list is off


def test_check_names_the_stale_stage_and_the_fix(tmp_path: Path) -> None:
    stale = tmp_path / "dvc.yaml"
    stale.write_text(DVC_YAML.replace("      - pipeline/resume.py\n", "", 1))
    done = run_module("tools.dvc_deps", "--check", "--dvc-yaml", stale, timeout=600)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "stage train: missing pipeline/resume.py" in done.stderr, done.stderr
    assert "python -m tools.dvc_deps" in done.stderr, done.stderr
    assert stale.read_text() == DVC_YAML.replace("      - pipeline/resume.py\n", "", 1)  # --check writes nothing


def test_rewrite_keeps_comments_and_other_deps() -> None:
    # report's .py block is followed by comment lines, download's data folder carries one on its line,
    # and train's list is reordered: the rewrite restores the file to the letter.
    stale = (re.sub(r"      - \S+\.py\n(      # Reads)", r"\1", DVC_YAML, count=1)
             .replace("        - pipeline/io.py\n        - pipeline/runtime.py\n        - data/folders",
                      "        - pipeline/stale.py\n        - data/folders", 1)
             .replace("      - src/train.py\n      - src/__init__.py\n",
                      "      - src/__init__.py\n      - src/train.py\n", 1))
    assert stale.count("\n") == DVC_YAML.count("\n") - 2
    text, changes = dvc_deps.update(stale)
    assert text == DVC_YAML
    assert [change.split(":")[0] for change in changes] == ["stage download", "stage train", "stage report"]


@functools.cache
def imported_project_files(module: str) -> frozenset[str]:
    """Project source files a fresh interpreter loads when it imports `module` (a stage's entry point)."""
    probe = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
        "print(json.dumps([getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, module], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True)
    files = {Path(f).resolve() for f in json.loads(out.stdout) if f and Path(f).is_absolute()}
    return frozenset(f.relative_to(REPO_ROOT).as_posix() for f in files
                     if f.is_relative_to(REPO_ROOT) and ".venv" not in f.parts and not dvc_deps.runs_no_code(f))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_hold_what_the_interpreter_loads(stage: str) -> None:
    """The tool reads imports from the source; what Python actually loads must be among them."""
    loaded = set(imported_project_files(entry_point(stage)))
    if "pipeline/models/${item.model}.py" in code_deps(stage):
        # The model's own file is imported at run time through the registry, by name.
        for name, model_module in MODELS.items():
            loaded |= {f.replace(f"models/{name}.py", "models/${item.model}.py")
                       for f in imported_project_files(model_module)}
    assert loaded <= code_deps(stage), f"{stage}: loads {loaded - code_deps(stage)}, not listed"


def test_only_the_stages_that_build_a_model_depend_on_the_registry() -> None:
    assert {stage for stage in STAGES if dvc_deps.REGISTRY in code_deps(stage)} == {"train", "evaluate"}


def test_no_stage_imports_another_models_code() -> None:
    for stage in ("train", "evaluate"):
        leaked = {f"pipeline/models/{name}.py" for name in MODELS} & imported_project_files(entry_point(stage))
        assert not leaked, f"{stage} imports model code before it knows the model: {leaked}"


def test_params_yaml_is_valid_and_every_model_has_a_section(committed_params: Path) -> None:
    params = load_params(committed_params)
    assert set(params.models) == set(MODELS)
    assert set(params.run.models) <= set(params.models)
