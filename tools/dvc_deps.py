"""Keep dvc.yaml's per-stage `.py` dependencies equal to what each stage imports: `make deps`.

Usage: python -m tools.dvc_deps [--check] [--dvc-yaml PATH]

A stage depends on the project files that its entry point (`python -m <module>` in its cmd) imports,
directly or through other project modules, read from the source (nothing is run):
- an import inside a function counts (it runs when the function is called); one under
  `if TYPE_CHECKING:` does not;
- importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too; an __init__.py that holds only a
  docstring runs no code and is not listed;
- the model registry (pipeline/models/__init__.py) imports a model's module by name at run time. A
  stage that reaches it lists `pipeline/models/${item.model}.py` (DVC fills in each matrix item's
  model) and what any model module imports, since DVC cannot template a list per model.

The entry point comes first, then its package's __init__.py, then the rest in sorted order. Without
--check, dvc.yaml's `.py` entries are rewritten in place (ruamel.yaml round-trip: comments and the
other deps, data folders say, stay). With --check nothing is written, and the first stage that is off
is named on one line (exit status 2).
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

from pipeline.io import atomic_file
from pipeline.runtime import UserError, run_stage

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "pipeline/models/__init__.py"  # imports MODELS' modules by name (importlib)
MODEL_FILE = "pipeline/models/${item.model}.py"  # how a matrix stage names its own model's module
FIX = "run `python -m tools.dvc_deps` to rewrite the lists"


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The project file of dotted module `name` (a module or a package's __init__.py), or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_project(name: str, root: Path) -> bool:
    top = root / name.split(".")[0]
    return top.with_suffix(".py").is_file() or (top.is_dir() and any(top.glob("*.py")))


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: functions' included, `if TYPE_CHECKING:` bodies left out."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        children = ast.iter_child_nodes(node)
        if isinstance(node, ast.If) and _type_checking(node):
            children = iter(node.orelse)
        todo.extend(children)
    return found


def imports(path: Path, root: Path = ROOT) -> set[Path]:
    """Project files that importing the module at `path` runs directly (package __init__.py files included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, False) for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative to the file's package (for an __init__.py: its own package)
                package = path.relative_to(root).parts[:-1]
                base = ".".join([*package[:len(package) - node.level + 1], *([base] if base else [])])
            # `from a import b`: b is a submodule or a name defined in a
            targets = [(base, False)] + [(f"{base}.{alias.name}", True) for alias in node.names]
        for name, optional in targets:
            if not name or not _is_project(name, root):
                continue
            if module_file(name, root) is None and not optional and not root.joinpath(*name.split(".")).is_dir():
                raise UserError(f"{path.relative_to(root)}: imports {name}, which is no file of the project")
            parts = name.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {file for name in names if (file := module_file(name, root)) is not None and file != path}


def runs_no_code(path: Path) -> bool:
    """A package marker: an __init__.py with a docstring (and `from __future__` imports) only."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all((isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
               or (isinstance(node, ast.ImportFrom) and node.module == "__future__") for node in body)


def closure(module: str, root: Path = ROOT) -> set[str]:
    """Project files (relative, posix) that `python -m module` runs: the module, its packages, what they import."""
    parts = module.split(".")
    start = {module_file(".".join(parts[:i]), root) for i in range(1, len(parts) + 1)} - {None}
    if module_file(module, root) is None:
        raise UserError(f"no module {module} in {root}")
    seen, todo = set(), list(start)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imports(path, root) - seen)
    return {path.relative_to(root).as_posix() for path in seen if not runs_no_code(path)}


def model_modules() -> dict[str, str]:
    from pipeline.models import MODELS  # the registry's own list: name -> module

    return MODELS


def stage_files(module: str, matrix_model: bool, root: Path = ROOT) -> list[str]:
    """The `.py` deps of a stage running `python -m module`, in dvc.yaml's order."""
    files = closure(module, root)
    if REGISTRY in files:
        for name, model in model_modules().items():
            own = module_file(model, root).relative_to(root).as_posix()
            files |= {MODEL_FILE if matrix_model and f == own else f for f in closure(model, root)}
    entry = module_file(module, root).relative_to(root).as_posix()
    parts = module.split(".")
    packages = [f"{'/'.join(parts[:i])}/__init__.py" for i in range(1, len(parts))]
    head = [entry, *(f for f in packages if f in files)]
    return head + sorted(files - set(head))


def _is_code(dep: Any) -> bool:
    return isinstance(dep, str) and dep.endswith(".py")


def _replace_code_deps(deps: CommentedSeq, files: list[str]) -> None:
    """Put `files` where deps' `.py` entries stand (the first of them), keeping every comment: a comment on
    an entry's own line stays with that entry, the comment lines after an entry stay after the block."""
    items, comments = list(deps), dict(deps.ca.items)  # comments: index -> [token on or after its line, ...]
    at = next((i for i, dep in enumerate(items) if _is_code(dep)), 0)
    own_line, after, template = {}, "", None
    for i, dep in enumerate(items):
        if _is_code(dep) and (token := comments.get(i, [None])[0]) is not None:
            line, _, following = token.value.partition("\n")
            if line.strip():
                own_line[dep] = line
            after += following
            template = token
    block = []
    for n, dep in enumerate(files):
        value = own_line.get(dep, "") + "\n" + (after if n == len(files) - 1 else "")
        token = None
        if value != "\n":
            token = copy.copy(template)
            token.value = value
        block.append((dep, [token, None, None, None] if token else None))
    others = [(dep, comments.get(i)) for i, dep in enumerate(items) if not _is_code(dep)]
    del deps[:]
    deps.ca.items.clear()
    for i, (dep, comment) in enumerate(others[:at] + block + others[at:]):
        deps.append(dep)
        if comment is not None:
            deps.ca.items[i] = comment


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and block scalars are kept
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never re-wrap a line
    yaml.preserve_quotes = True
    return yaml


def update(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """dvc.yaml `text` with every stage's `.py` deps derived from its imports; and one line per stage that changed."""
    yaml = _yaml()
    document = yaml.load(text)
    changes = []
    for name, stage in document.get("stages", {}).items():
        definition = stage.get("do", stage)
        found = re.search(r"python -m (\S+)", str(definition.get("cmd", "")))
        if found is None:
            continue
        deps = definition.setdefault("deps", CommentedSeq())
        wanted = stage_files(found.group(1), "model" in stage.get("matrix", {}), root)
        listed = [dep for dep in deps if _is_code(dep)]
        if listed == wanted:
            continue
        missing = [f for f in wanted if f not in listed]
        extra = [f for f in listed if f not in wanted]
        if missing or extra:
            changes.append(f"stage {name}: " + "; ".join(
                [f"missing {', '.join(missing)} (imported)"] * bool(missing)
                + [f"lists {', '.join(extra)}, which it does not import"] * bool(extra)))
        else:
            changes.append(f"stage {name}: .py deps out of order (entry point, its __init__.py, then sorted)")
        _replace_code_deps(deps, wanted)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue(), changes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; fail if a list is off")
    parser.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml", help="the file to check or rewrite")
    args = parser.parse_args(argv)
    path = args.dvc_yaml.resolve()
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    try:
        text = args.dvc_yaml.read_text()
    except FileNotFoundError:
        raise UserError(f"{shown}: file not found") from None
    new, changes = update(text)
    if args.check:
        if changes:
            raise UserError(f"{shown}: {changes[0]}; {FIX}")
        return
    if new != text:
        with atomic_file(args.dvc_yaml) as tmp:
            tmp.write_text(new)
    for change in changes:
        print(f"{shown}: {change}: rewritten")


if __name__ == "__main__":
    run_stage(main)
