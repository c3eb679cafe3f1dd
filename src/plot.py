"""Stage plot: training curves, confusion matrix and a predictions grid of one model (params: plot)."""

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split
from pipeline.evaluation import confusion_matrix
from pipeline.plots import plot_confusion, plot_curves, plot_predictions, read_dvclive_history
from pipeline.runtime import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--title", required=True, help="figure title, e.g. mnist-5k/mlp")
    parser.add_argument("--live", required=True, type=Path, help="dvclive directory written by the train stage")
    parser.add_argument("--predictions", required=True, type=Path, help="file written by the evaluate stage")
    parser.add_argument("--parsed", required=True, type=Path, help="directory written by the parse stage")
    parser.add_argument("--split", required=True, type=Path, help="directory written by the split stage")
    parser.add_argument("--out", required=True, type=Path, help="directory for the PNG figures")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()

    config = load_params(args.params).plot
    data = load_parsed(args.parsed)
    test = load_split(args.split)["test"]
    labels, predictions = data.labels[test], np.load(args.predictions)

    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(read_dvclive_history(args.live), args.title, args.out / "curves.png")
    plot_confusion(confusion_matrix(labels, predictions, len(data.classes)), data.classes,
                   f"{args.title}: test confusion", args.out / "confusion.png")
    # Evenly spaced test rows: a fair sample whatever the order (mnist-5k is sorted by class).
    shown = np.linspace(0, len(test) - 1, min(config.grid_size**2, len(test))).astype(int)
    plot_predictions(data.images[test][shown], labels[shown], predictions[shown], data.classes,
                     f"{args.title}: test predictions", args.out / "predictions.png")


if __name__ == "__main__":
    run_stage(main)
