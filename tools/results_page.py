"""docs/results.md from the committed measurements, so no figure in the docs is ever typed by hand.

Usage: python -m tools.results_page [--check] [--rev REV]

Sources: every `results/<dataset>/<model>/` of the pipeline (metrics.json, details.json, train/metrics.json,
and the params that ran, from dvc.lock) and every bench's saved run, `bench/results/<name>.json` (written by
`bench.common.save_results`: its command, date, machine and figures). A bench with no saved run is listed
with the command that makes one. Rerun it after `dvc repro` or a bench run.

A page may quote a figure from a committed JSON file as a link whose text is the number and whose title
is the key path: `[0.968](results/mnist-5k/lenet/metrics.json "accuracy")`. `--check` writes nothing and
fails (one line, exit status 2) when docs/results.md is not what this script writes, or when a quoted
figure differs from its file (compared at the quoted number of decimals). `--rev HEAD` reads every file
as committed at that revision instead of from the working tree.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import posixpath
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ruamel.yaml import YAML

from pipeline.config import TrainConfig
from pipeline.io import atomic_file
from pipeline.runtime import UserError, run_stage

ROOT = Path(__file__).resolve().parents[1]
PAGE = "docs/results.md"
DOCS = ("README.md", "docs/*.md")  # the pages whose quoted figures are checked
FIX = "run `python -m tools.results_page` and commit docs/results.md"


UNREAD = {".git", ".venv", ".dvc"}  # folders no page is written from: not walked (.venv alone holds ~10^4 files)


def _files(root: Path) -> Iterator[str]:
    """Every file under `root`, as a relative POSIX path, outside the UNREAD folders."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in UNREAD]
        relative = Path(folder).relative_to(root)
        yield from ((relative / name).as_posix() for name in files)


class Tree:
    """The project's files, from the working tree or as committed at a git revision."""

    def __init__(self, root: Path = ROOT, rev: str | None = None) -> None:
        self.root, self.rev = root, rev
        if rev is None:
            self.paths = sorted(_files(root))
        else:
            listed = self._git("ls-tree", "-r", "--name-only", rev)
            self.paths = sorted(listed.splitlines())

    def _git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True)
        if done.returncode:
            raise UserError(f"git {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def glob(self, pattern: str) -> list[str]:
        """Paths matching `pattern`, a `*` standing for one path component (never a `/`)."""
        depth = pattern.count("/")
        return [p for p in self.paths if p.count("/") == depth and fnmatch.fnmatchcase(p, pattern)]

    def read(self, path: str) -> str:
        if self.rev is None:
            return (self.root / path).read_text()
        return self._git("show", f"{self.rev}:{path}")

    def json(self, path: str) -> Any:
        try:
            return json.loads(self.read(path))
        except (OSError, ValueError, UserError) as err:
            raise UserError(f"{path}: not readable JSON ({err}); {FIX}") from None


# ---------------------------------------------------------------- formatting

def number(value: Any) -> str:
    """A figure as the page prints it: integers with thousands separators, floats as saved."""
    if value is None:
        return "not reached"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(number(v) for v in value)
    return str(value)


def flatten(figures: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """("outer / inner", value) for every leaf of a bench's nested figures."""
    for key, value in figures.items():
        name = f"{prefix} / {key}" if prefix else key
        if isinstance(value, dict):
            yield from flatten(value, name)
        else:
            yield name, value


def table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A Markdown table; the first `text_columns` columns align left, the figures right."""
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


# ---------------------------------------------------------------- the pipeline's results

def recipe(params: dict[str, Any]) -> str:
    """A model section as it ran (dvc.lock), in a few words: budget, batch, optimizer, lr, schedule."""
    budget = f"{params['epochs']} epochs" if params.get("epochs") else f"{params.get('steps')} steps"
    words = [budget, f"batch {params['batch_size']}", params["optimizer"], f"lr {params['lr']:g}",
             params.get("schedule", "constant")]
    words += [f"{key} {params[key]}" for key in ("augment_rotation", "augment_shift", "label_smoothing")
              if params.get(key)]
    # `auto` (the default) flips where the dataset keeps labels under a flip; only a forced choice is named
    words += {True: ["flip"], False: ["no flip"]}.get(params.get("augment_flip"), [])
    return ", ".join(words)


def pipeline_section(tree: Tree) -> list[str]:
    lock = YAML(typ="safe").load(tree.read("dvc.lock")) if "dvc.lock" in tree.paths else {"stages": {}}
    folders = sorted({str(PurePosixPath(p).parent) for p in tree.glob("results/*/*/metrics.json")})
    lines = ["## The pipeline's results", "",
             "Test-set figures of every dataset x model the committed `dvc repro` produced, from",
             "`results/<dataset>/<model>/metrics.json`, `details.json` and `train/metrics.json`; the recipe is",
             "the model's params section as it ran (`dvc.lock`). Reproduce: `make run` (or `dvc repro`) on the",
             "committed params.yaml. These figures do not depend on the machine, except through the precision",
             "that ran (`auto` is bf16 where the CPU has native bf16: the column says which); times and",
             "throughput do, so they are left to `dvc metrics show`.", ""]
    if not folders:
        return lines + ["No committed pipeline results: run `make run`, commit `results/`, then this script.", ""]
    rows, rotations = [], {}
    for folder in folders:
        dataset, model = folder.split("/")[1:3]
        metrics, details = tree.json(f"{folder}/metrics.json"), tree.json(f"{folder}/details.json")
        train = tree.json(f"{folder}/train/metrics.json")
        ran = lock["stages"].get(f"train@{dataset}-{model}", {}).get("params", {}).get("params.yaml", {})
        section = ran.get(f"models.{model}")
        if section:  # as it trained on this dataset: its per_dataset entry over the section, as the stage merges it
            section = TrainConfig.model_validate(section).on(dataset).model_dump()
        rows.append([dataset, model, number(metrics["accuracy"]), number(round(metrics["loss"], 4)),
                     number(round(metrics["ece"], 4)), number(metrics.get("accuracy_rotated_45")),
                     number(details["num_parameters"]), f"{train['best_epoch']} / {train['step'] + 1}",
                     train["precision"], recipe(section) if section else "not in dvc.lock"])
        rotations[(dataset, model)] = details["rotation_accuracy"]
    lines += table(["dataset", "model", "test accuracy", "test loss", "ECE", "accuracy at 45°", "parameters",
                    "best epoch", "precision", "recipe"], rows, 2)
    angles = sorted({float(a) for curve in rotations.values() for a in curve})
    lines += ["", "Test accuracy with the test images rotated (degrees; `rotation_accuracy` in `details.json`):", ""]
    lines += table(["dataset", "model", *(f"{a:g}°" for a in angles)],
                   [[ds, model, *(number(curve.get(f"{a:g}")) for a in angles)]
                    for (ds, model), curve in rotations.items()], 2)
    return lines + [""]


# ---------------------------------------------------------------- the benches' saved runs

def bench_title(tree: Tree, module: str) -> str:
    """The first line of a bench's docstring."""
    doc = ast.get_docstring(ast.parse(tree.read(module))) or PurePosixPath(module).stem
    return " ".join(doc.split("\n\n")[0].split()).rstrip(".")  # the first paragraph, on one line


def machine_line(machine: dict[str, Any]) -> str:
    text = (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, torch {machine.get('torch', '?')}, "
            f"{machine.get('threads', '?')} threads")
    load = machine.get("load_1min")
    if load is not None:
        shared = " (above the core count: other jobs shared the machine)" if load > (machine.get("cores") or 0) else ""
        text += f"; load average {load}{shared}"
    return text


def bench_section(tree: Tree) -> list[str]:
    lines = ["## Benchmarks", "",
             "Each bench measures its ratios side by side in one run and saves its figures to",
             "`bench/results/<name>.json` with the command and the machine. Times depend on the machine and on",
             "what else ran on it; compare ratios from one run. What each bench does: [bench/README.md](../bench/README.md).",
             ""]
    modules = [p for p in tree.glob("bench/*.py") if PurePosixPath(p).stem not in ("__init__", "common")]
    missing = []
    for module in sorted(modules):
        name = PurePosixPath(module).stem
        saved = f"bench/results/{name}.json"
        if saved not in tree.paths:
            missing.append(name)
            continue
        record = tree.json(saved)
        lines += [f"### {name}: {bench_title(tree, module)}", "",
                  f"`{record['command']}`, {record['date']}; {machine_line(record.get('machine', {}))}.", ""]
        lines += table(["figure", "value"], [[key, number(value)] for key, value in flatten(record["figures"])])
        lines += [""]
    if missing:
        lines += ["### No saved run yet", "",
                  "These benches have no saved run; `python -m bench.<name>` (on an otherwise idle machine) makes one:", ""]
        lines += [f"- `{name}`: {bench_title(tree, f'bench/{name}.py')}" for name in missing]
        lines += [""]
    return lines


def render(tree: Tree) -> str:
    head = ["# Results", "",
            "<!-- Generated by `python -m tools.results_page` from the committed files it names; do not edit. -->",
            "Every measured number of the project, each with the command that reproduces it. This page is",
            "written by `python -m tools.results_page` from the committed results and bench runs; rerun it after",
            "`dvc repro` or a bench run. A test fails when it, or a figure another page quotes, differs from its",
            "source file.", ""]
    return "\n".join(head + pipeline_section(tree) + bench_section(tree)).rstrip() + "\n"


# ---------------------------------------------------------------- figures quoted elsewhere

QUOTE = re.compile(r"\[(-?[\d,]*\.?\d+)\]\(([^)\s]+\.json) \"([^\"]+)\"\)")  # [0.968](path.json "key.path")


def lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def quoted_mismatches(tree: Tree) -> list[str]:
    """`page: quoted X, file has Y` for every quoted figure that differs from its source."""
    problems = []
    pages = sorted({p for pattern in DOCS for p in tree.glob(pattern)})
    for page in pages:
        for text, target, key in QUOTE.findall(tree.read(page)):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(page), target))
            try:
                value = lookup(tree.json(resolved), key)
            except (KeyError, IndexError, ValueError, TypeError, UserError):
                problems.append(f"{page}: quotes {text} from {resolved} {key!r}, which has no such figure")
                continue
            quoted = float(text.replace(",", ""))
            decimals = len(text.split(".")[1]) if "." in text else 0
            if not isinstance(value, (int, float)) or round(float(value), decimals) != quoted:
                problems.append(f"{page}: quotes {text} from {resolved} {key!r}, which holds {value}")
    return problems


def check(tree: Tree) -> None:
    if PAGE not in tree.paths or tree.read(PAGE) != render(tree):
        raise UserError(f"{PAGE} is not what the committed results give; {FIX}")
    if problems := quoted_mismatches(tree):
        raise UserError(f"{problems[0]}; quote the file's figure (or link docs/results.md instead)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail when the page or a quote is stale")
    parser.add_argument("--rev", help="read the files as committed at this git revision")
    args = parser.parse_args()
    tree = Tree(ROOT, args.rev)
    if args.check:
        check(tree)
        return
    with atomic_file(ROOT / PAGE) as tmp:
        tmp.write_text(render(tree))


if __name__ == "__main__":
    run_stage(main)
