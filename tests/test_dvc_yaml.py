"""dvc.yaml states each stage's code dependencies at the finest true grain, and reads params.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.config import load_params
from pipeline.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load(ROOT / "dvc.yaml")["stages"]
# Docstring-only package markers: importing them runs no code, so they are not listed as deps.
# (src/__init__.py runs code, the missing-dependency hook, so every stage lists it.)
MARKERS = {"pipeline/__init__.py", "pipeline/data/__init__.py"}


def imported_project_files(module: str) -> set[str]:
    """Project source files a fresh interpreter loads when it imports `module` (a stage's entry point)."""
    probe = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
        "print(json.dumps([getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, module], cwd=ROOT, capture_output=True, text=True, check=True)
    files = {Path(f).resolve() for f in json.loads(out.stdout) if f and Path(f).is_absolute()}
    return {f.relative_to(ROOT).as_posix() for f in files if f.is_relative_to(ROOT) and ".venv" not in f.parts}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_what_the_stage_imports(stage: str) -> None:
    definition = STAGES[stage].get("do", STAGES[stage])
    module = re.search(r"python -m (\S+)", definition["cmd"]).group(1)
    declared = {dep for dep in definition["deps"] if dep.endswith(".py")}
    # The model's own file is imported at run time through the registry, by name.
    expected = imported_project_files(module) - MARKERS
    if "pipeline/models/${item.model}.py" in declared:
        # DVC cannot template a dep list per model: the union of what every model's module imports.
        for name, model_module in MODELS.items():
            expected |= {f.replace(f"models/{name}.py", "models/${item.model}.py")
                         for f in imported_project_files(model_module) - MARKERS}
    assert declared == expected, f"{stage}: missing {expected - declared}, not imported {declared - expected}"


def test_no_stage_imports_another_models_code() -> None:
    for stage in ("train", "evaluate"):
        module = re.search(r"python -m (\S+)", STAGES[stage]["cmd"]).group(1)
        leaked = {f"pipeline/models/{name}.py" for name in MODELS} & imported_project_files(module)
        assert not leaked, f"{stage} imports model code before it knows the model: {leaked}"


def test_params_yaml_is_valid_and_every_model_has_a_section(committed_params: Path) -> None:
    params = load_params(committed_params)
    assert set(params.models) == set(MODELS)
    assert set(params.run.models) <= set(params.models)
