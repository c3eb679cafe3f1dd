"""One thin entry point per pipeline stage: `python -m src.<stage> --help`.

A Python without the pipeline's dependencies (another `python` first on PATH) fails while a stage
imports them, before run_stage() can catch anything: this hook turns that into one line naming the fix.
"""

import os
import sys

from pipeline.runtime import missing_module


def _missing_dependency_hook(kind, err, tb):  # noqa: ANN001 (sys.excepthook's signature)
    if isinstance(err, ModuleNotFoundError):
        print(missing_module(err), file=sys.stderr, flush=True)
        os._exit(2)
    sys.__excepthook__(kind, err, tb)


sys.excepthook = _missing_dependency_hook
