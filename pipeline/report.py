"""The cross-model report: reports/summary.md, one row per dataset x model with 95% intervals, each pair of
models per dataset compared on the same test images (paired difference, exact McNemar test), the comparison
figures and reports/curves.tsv, read from each model's metrics.json, details.json, correct.json and train/."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import HEADLINE_ROTATION
from pipeline.history import read_dvclive_history
from pipeline.io import atomic_dir, atomic_file, read_json, reading
from pipeline.outcomes import Outcomes, decode
from pipeline.plots import plot_models_curves, plot_robustness
from pipeline.runtime import UserError
from pipeline.stats import ALPHA, compare, holm

History = dict[str, tuple[np.ndarray, np.ndarray]]  # read_dvclive_history(): "val/loss" -> (epochs, values)


@dataclass
class ReportRow:
    dataset: str
    model: str
    test_accuracy: float
    test_loss: float
    ece: float  # expected calibration error
    rotated_accuracy: float | None  # test accuracy at HEADLINE_ROTATION degrees; None if not evaluated
    num_parameters: int
    best_epoch: int
    epochs: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> 95% (low, high)


@dataclass
class Results:
    """What the report reads of every dataset x model."""

    rows: list[ReportRow] = field(default_factory=list)
    histories: dict[str, dict[str, History]] = field(default_factory=dict)  # dataset -> model -> history
    robustness: dict[str, dict[str, dict[float, float]]] = field(default_factory=dict)  # ... -> angle -> accuracy
    outcomes: dict[str, dict[str, Outcomes]] = field(default_factory=dict)  # dataset -> model -> test images right


def read_results(results: Path, datasets: list[str], models: list[str]) -> Results:
    """The results of every dataset x model from results/<dataset>/<model>/, as the evaluate and train
    stages write them; a missing or unreadable file is one UserError naming the stage to run."""
    read = Results()
    for dataset in datasets:
        for model in models:
            folder = results / dataset / model
            for name in ("metrics.json", "details.json", "correct.json"):
                if not (folder / name).is_file():
                    raise UserError(f"{folder}: no {name} (run the evaluate stage first)")
            history = read_dvclive_history(folder / "train")
            epochs = max(len(values) for _, values in history.values())  # as run: a step budget sets no epochs
            with reading(folder / "metrics.json", "evaluate"):
                test = read_json(folder / "metrics.json")
                scores = (test["accuracy"], test["loss"], test["ece"])
            with reading(folder / "details.json", "evaluate"):
                details = read_json(folder / "details.json")
                rotated = details["rotation_accuracy"]
                detail_scores = (rotated.get(str(HEADLINE_ROTATION)), details["num_parameters"])
                intervals = {name: (found["low"], found["high"]) for name, found in details["intervals"].items()}
            with reading(folder / "correct.json", "evaluate"):
                read.outcomes.setdefault(dataset, {})[model] = decode(read_json(folder / "correct.json"))
            with reading(folder / "train" / "metrics.json", "train"):
                fit = (read_json(folder / "train" / "metrics.json")["best_epoch"], epochs)
            read.rows.append(ReportRow(dataset, model, *scores, *detail_scores, *fit, intervals))
            read.histories.setdefault(dataset, {})[model] = history
            read.robustness.setdefault(dataset, {})[model] = {float(angle): value for angle, value in rotated.items()}
    return read


def write_figures(results: Results, figures: Path, summary: Path) -> dict[str, list[tuple[str, str]]]:
    """Per dataset, every model's training curves and rotation robustness as PNGs in `figures` (written
    together, or not at all); returns their (caption, path relative to `summary`) for render_summary."""
    listed, relative = {}, Path(os.path.relpath(figures, summary.parent)).as_posix()
    with atomic_dir(figures) as tmp:
        for dataset in results.histories:
            plot_models_curves(results.histories[dataset], dataset, tmp / f"{dataset}-curves.png")
            plot_robustness(results.robustness[dataset], dataset, tmp / f"{dataset}-rotation.png")
            listed[dataset] = [(f"{dataset}: training curves of every model", f"{relative}/{dataset}-curves.png"),
                               (f"{dataset}: rotation robustness", f"{relative}/{dataset}-rotation.png")]
    return listed


def _with_interval(row: ReportRow, metric: str, value: float) -> str:
    low, high = row.intervals.get(metric, (None, None))
    return f"{value:.4f}" if low is None else f"{value:.4f} [{low:.4f}, {high:.4f}]"


def paired_section(models: list[str], outcomes: dict[str, Outcomes]) -> list[str]:
    """Markdown comparing each pair of `models` (best first) on the same test images: accuracy difference
    with Newcombe's 95% interval, exact McNemar p, Holm's adjustment over the pairs, and in words."""
    pairs = [(better, other) for i, better in enumerate(models) for other in models[i + 1:]
             if outcomes[better].test_set == outcomes[other].test_set]
    if not pairs:
        return []
    tests = [compare(outcomes[other].correct, outcomes[better].correct) for better, other in pairs]
    adjusted = holm([test.p for test in tests])
    lines = ["", f"Each pair of models on the same {len(outcomes[models[0]].correct):,} test images:", "",
             "| model | vs model | accuracy difference [95% CI] | only the first right | only the second right "
             "| McNemar p | Holm p |", "|---|---|---:|---:|---:|---:|---:|"]
    detectable, not_detectable = [], []
    for (better, other), test, p_holm in zip(pairs, tests, adjusted):
        lines.append(f"| {better} | {other} | {test.difference.format(sign=True)} | {test.table.first_only} "
                     f"| {test.table.second_only} | {test.p:.3g} | {p_holm:.3g} |")
        (detectable if p_holm < ALPHA and test.difference.estimate > 0 else not_detectable).append((better, other))
    words = [f"Detectable at {ALPHA:.0%} (exact McNemar test, Holm-adjusted over the {len(pairs)} pairs): "
             + (", ".join(f"{b} is better than {o}" for b, o in detectable) or "none") + "."]
    if not_detectable:
        words.append("Not detectable: " + ", ".join(f"{b} vs {o}" for b, o in not_detectable)
                     + " (the difference could be luck of the test set).")
    return lines + ["", " ".join(words)]


def render_summary(rows: list[ReportRow], figures: dict[str, list[tuple[str, str]]],
                   outcomes: dict[str, dict[str, Outcomes]] | None = None) -> str:
    """Markdown: a table of test results with 95% intervals, best model first within each dataset, then per
    dataset the paired comparisons of its models (from `outcomes`: dataset -> model -> Outcomes) and figures.

    `figures` maps a dataset to (caption, path relative to the summary) pairs. No machine-dependent
    number (train time, throughput) goes in: the same results give the same bytes on any machine.
    """
    lines = [
        "# Results",
        "",
        "Regenerated by `dvc repro` (stage `report`); every number comes from `results/<dataset>/<model>/`.",
        (f"ECE: expected calibration error. Accuracy at {HEADLINE_ROTATION}°: the test set rotated by "
         f"{HEADLINE_ROTATION} degrees. Train time and inference throughput depend on the machine, so they are "
         "not here: `dvc metrics show` lists them (`train_time_s`, `throughput_images_per_s`)."),
        ("In brackets: 95% intervals over the test set (Wilson's for accuracy, a bootstrap for loss and ECE); "
         "they do not cover a rerun with another seed (`python -m src.compare --seeds`, docs/comparing.md)."),
        "",
        (f"| dataset | model | test accuracy | test loss | ECE | accuracy at {HEADLINE_ROTATION}° | parameters "
         "| best epoch |"),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: (r.dataset, -r.test_accuracy)):
        rotated = ("–" if row.rotated_accuracy is None else
                   _with_interval(row, f"accuracy_rotated_{HEADLINE_ROTATION}", row.rotated_accuracy))
        lines.append(f"| {row.dataset} | {row.model} | {_with_interval(row, 'accuracy', row.test_accuracy)} "
                     f"| {_with_interval(row, 'loss', row.test_loss)} | {_with_interval(row, 'ece', row.ece)} "
                     f"| {rotated} | {row.num_parameters:,} | {row.best_epoch} / {row.epochs} |")
    outcomes = outcomes or {}
    for dataset in dict.fromkeys([*figures, *outcomes]):
        found = outcomes.get(dataset, {})
        best_first = [row.model for row in sorted(rows, key=lambda r: -r.test_accuracy)
                      if row.dataset == dataset and row.model in found]
        lines += ["", f"## {dataset}", *paired_section(best_first, found), ""]
        lines += [f"![{caption}]({path})" for caption, path in figures.get(dataset, [])]
        models = sorted({row.model for row in rows if row.dataset == dataset})
        links = ", ".join(f"[{model}](../results/{dataset}/{model}/figures/)" for model in models)
        lines += ["", ("Per-model figures (training curves, confusion, predictions, most confident mistakes, "
                       f"reliability, first-layer filters, PCA / t-SNE): {links}.")]
    return "\n".join(lines) + "\n"


def curve_rows(histories: dict[str, History]) -> list[dict[str, str | int | float]]:
    """Long-format rows {series, epoch, train_loss, val_loss, ...} from {"<ds>/<model>": dvclive history}."""
    rows = []
    for series, history in histories.items():
        epochs = sorted({int(e) for steps, _ in history.values() for e in steps})
        for epoch in epochs:
            row: dict[str, str | int | float] = {"series": series, "epoch": epoch}
            for name, (steps, values) in history.items():
                hits = values[steps == epoch]
                if len(hits):
                    row[name.replace("/", "_")] = float(hits[0])
            rows.append(row)
    return rows


def write_curves(path: Path, histories: dict[str, dict[str, History]]) -> None:
    """reports/curves.tsv: curve_rows() of every dataset x model ("<dataset>/<model>" series), for `dvc plots diff`."""
    curves = curve_rows({f"{dataset}/{model}": history for dataset, models in histories.items()
                         for model, history in models.items()})
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in curves for key in row)),
                                delimiter="\t")
        writer.writeheader()
        writer.writerows(curves)
