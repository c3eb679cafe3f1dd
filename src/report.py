"""Stage report: reports/summary.md comparing every dataset x model listed under run: in params.yaml, with
95% intervals, each pair of models per dataset tested on the same test images, per-dataset comparison
figures (training curves of every model, rotation robustness) and reports/curves.tsv, the training curves
of every model for `dvc plots diff`. Reads each model's metrics.json, details.json, correct.json and
train/ (dvclive); writes no machine-dependent number."""

from pipeline.config import load_params
from pipeline.io import atomic_file
from pipeline.report import read_results, render_summary, write_curves, write_figures
from pipeline.runtime import run_stage
from src import stage_args


def main() -> None:
    args = stage_args(__doc__, params=True, results="directory holding <dataset>/<model>/ results",
                      out="output markdown file", figures="output directory for the comparison figures",
                      curves="output TSV: every model's training curves")

    run = load_params(args.params).run
    results = read_results(args.results, run.datasets, run.models)
    figures = write_figures(results, args.figures, args.out)
    write_curves(args.curves, results.histories)
    with atomic_file(args.out) as tmp:
        tmp.write_text(render_summary(results.rows, figures, results.outcomes))


if __name__ == "__main__":
    run_stage(main)
