"""Stage report: reports/summary.md comparing every dataset x model listed under run: in params.yaml, with
per-dataset comparison figures (training curves of every model, rotation robustness) and
reports/curves.tsv, the training curves of every model for `dvc plots diff`. Reads each model's
metrics.json, details.json and train/ (dvclive); writes no machine-dependent number."""

import argparse
import csv
import os
from pathlib import Path

from pipeline.config import HEADLINE_ROTATION, load_params
from pipeline.io import atomic_dir, atomic_file, read_json, reading
from pipeline.plots import plot_models_curves, plot_robustness, read_dvclive_history
from pipeline.report import ReportRow, curve_rows, render_summary
from pipeline.runtime import UserError, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", required=True, type=Path, help="directory holding <dataset>/<model>/ results")
    parser.add_argument("--out", required=True, type=Path, help="output markdown file")
    parser.add_argument("--figures", required=True, type=Path, help="output directory for the comparison figures")
    parser.add_argument("--curves", required=True, type=Path, help="output TSV: every model's training curves")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()

    params = load_params(args.params)
    rows, histories, robustness = [], {}, {}  # the last two: dataset -> model -> data
    for dataset in params.run.datasets:
        for model in params.run.models:
            folder = args.results / dataset / model
            for name in ("metrics.json", "details.json"):
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
            with reading(folder / "train" / "metrics.json", "train"):
                fit = (read_json(folder / "train" / "metrics.json")["best_epoch"], epochs)
            rows.append(ReportRow(dataset, model, *scores, *detail_scores, *fit))
            histories.setdefault(dataset, {})[model] = history
            robustness.setdefault(dataset, {})[model] = {float(angle): value for angle, value in rotated.items()}

    figures, relative = {}, Path(os.path.relpath(args.figures, args.out.parent)).as_posix()
    with atomic_dir(args.figures) as tmp:
        for dataset in params.run.datasets:
            plot_models_curves(histories[dataset], dataset, tmp / f"{dataset}-curves.png")
            plot_robustness(robustness[dataset], dataset, tmp / f"{dataset}-rotation.png")
            figures[dataset] = [(f"{dataset}: training curves of every model", f"{relative}/{dataset}-curves.png"),
                                (f"{dataset}: rotation robustness", f"{relative}/{dataset}-rotation.png")]

    curves = curve_rows({f"{dataset}/{model}": history for dataset, models in histories.items()
                         for model, history in models.items()})
    with atomic_file(args.curves) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in curves for key in row)),
                                delimiter="\t")
        writer.writeheader()
        writer.writerows(curves)
    with atomic_file(args.out) as tmp:
        tmp.write_text(render_summary(rows, figures))


if __name__ == "__main__":
    run_stage(main)
