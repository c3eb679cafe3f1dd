"""Training histories as the train stage's dvclive logs hold them: one TSV per metric under
<live>/plots/metrics/ (train/loss.tsv, val/accuracy.tsv, ...), a `step` column and the values."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.io import reading
from pipeline.runtime import UserError


def read_dvclive_history(live_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train/loss": (epochs, values), ...} from dvclive's plots/metrics/**/*.tsv files; epochs count from 1."""
    root = Path(live_dir) / "plots" / "metrics"
    history = {}
    for tsv in sorted(root.rglob("*.tsv")):
        with reading(tsv, "train"):
            text = tsv.read_text()
            rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
            if not rows or not text.endswith("\n"):  # dvclive writes whole lines
                raise UserError(f"{tsv}: {'no rows' if not rows else 'truncated'}; rerun the train stage (dvc repro -f)")
            name, key = tsv.relative_to(root).with_suffix("").as_posix(), tsv.stem
            history[name] = (np.array([int(r["step"]) for r in rows]) + 1, np.array([float(r[key]) for r in rows]))
    if not history:
        raise UserError(f"{live_dir}: no training log (dvclive's plots/metrics/*.tsv); run the train stage first")
    return history
