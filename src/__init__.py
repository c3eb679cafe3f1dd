"""One thin entry point per pipeline stage: `python -m src.<stage> --help`.

A Python without the pipeline's dependencies (another `python` first on PATH) fails while a stage
imports them, before run_stage() can catch anything: this hook turns that into one line naming the fix.
"""

import argparse
import os
import sys
from pathlib import Path

from pipeline.runtime import missing_module


def _missing_dependency_hook(kind, err, tb):  # noqa: ANN001 (sys.excepthook's signature)
    if isinstance(err, ModuleNotFoundError):
        print(missing_module(err), file=sys.stderr, flush=True)
        os._exit(2)
    sys.__excepthook__(kind, err, tb)


sys.excepthook = _missing_dependency_hook

PARSED = "directory written by the parse stage"
SPLIT = "directory written by the split stage"


def stage_args(doc: str | None, *, text: tuple[str, ...] = (), optional: tuple[str, ...] = (), params: bool = False,
               **options: str) -> argparse.Namespace:
    """A stage's command line, parsed. Each keyword names an option `--<name>` and gives its help; every
    option is a required path, except those listed in `text` (a plain string) or in `optional` (a path that
    may be left out). `params=True` adds `--params` (default params.yaml)."""
    parser = argparse.ArgumentParser(description=doc)
    for name, help_text in options.items():
        parser.add_argument(f"--{name}", required=name not in optional, type=str if name in text else Path,
                            help=help_text)
    if params:
        parser.add_argument("--params", default="params.yaml", help="params file")
    return parser.parse_args()
