"""The project's import graph has no cycle, and the schema stands below everything that uses it."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO_ROOT
from tools import dvc_deps



def find_cycle(root: Path, folders: tuple[str, ...]) -> list[str]:
    """One cycle of imports among the .py files under `folders` (imports inside functions count), or []."""
    graph = {path: dvc_deps.imports(path, root) for folder in folders for path in sorted((root / folder).rglob("*.py"))}
    done: set[Path] = set()  # files from which every way has been followed

    def visit(trail: list[Path]) -> list[Path]:
        for target in sorted(graph.get(trail[-1], ())):
            if target in trail:
                return [*trail[trail.index(target):], target]
            if target not in done and (cycle := visit([*trail, target])):
                return cycle
        done.add(trail[-1])
        return []

    for start in graph:
        if start not in done and (cycle := visit([start])):
            return [path.relative_to(root).as_posix() for path in cycle]
    return []


def test_no_import_cycle() -> None:
    cycle = find_cycle(REPO_ROOT, ("pipeline", "src", "tools"))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_a_late_import_back_is_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text('"""A package."""\n')
    (tmp_path / "pkg" / "config.py").write_text("from pkg.models import NAMES\n")
    (tmp_path / "pkg" / "models.py").write_text("NAMES = ()\n\n\ndef build():\n    from pkg.config import x\n")
    (tmp_path / "pkg" / "leaf.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                              "    from pkg.config import x\n")
    assert find_cycle(tmp_path, ("pkg",)) == ["pkg/config.py", "pkg/models.py", "pkg/config.py"]
    (tmp_path / "pkg" / "models.py").write_text("NAMES = ()\n")
    assert find_cycle(tmp_path, ("pkg",)) == []


def test_schema_imports_nothing_of_the_project_but_the_error_type() -> None:
    assert dvc_deps.closure("pipeline.schema") == {"pipeline/schema.py", "pipeline/runtime.py"}
