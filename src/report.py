"""Stage report: reports/summary.md comparing every dataset x model listed under run: in params.yaml."""

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.io import atomic_file, read_json
from pipeline.report import ReportRow, render_summary
from pipeline.runtime import UserError, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", required=True, type=Path, help="directory holding <dataset>/<model>/ results")
    parser.add_argument("--out", required=True, type=Path, help="output markdown file")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()

    params = load_params(args.params)
    rows = []
    for dataset in params.run.datasets:
        for model in params.run.models:
            folder = args.results / dataset / model
            if not (folder / "metrics.json").is_file():
                raise UserError(f"{folder}: no metrics.json (run the evaluate stage first)")
            test, train = read_json(folder / "metrics.json"), read_json(folder / "train" / "metrics.json")
            rows.append(ReportRow(dataset, model, test["accuracy"], test["loss"], train["best"]["epoch"],
                                  params.models[model].epochs, train["train_time_s"]))
    with atomic_file(args.out) as tmp:
        tmp.write_text(render_summary(rows))


if __name__ == "__main__":
    run_stage(main)
