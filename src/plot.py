"""Stage plot: figures of one model: training curves, confusion matrix, predictions and most confident
mistakes, reliability diagram, first-layer filters (models with a convolution), PCA and t-SNE of
penultimate features (params: plot)."""

import numpy as np

from pipeline.config import load_params
from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split
from pipeline.history import read_dvclive_history
from pipeline.io import atomic_dir, reading
from pipeline.metrics import confusion_matrix, evenly_spaced, expected_calibration_error
from pipeline.plots import (
    plot_confusion,
    plot_curves,
    plot_embeddings,
    plot_filters,
    plot_predictions,
    plot_reliability,
)
from pipeline.runtime import run_stage
from src import PARSED, SPLIT, stage_args


def main() -> None:
    args = stage_args(__doc__, text=("title",), params=True, title="figure title, e.g. mnist-5k/mlp",
                      live="dvclive directory written by the train stage",
                      predictions="file written by the evaluate stage", parsed=PARSED, split=SPLIT,
                      out="directory for the PNG figures")

    config = load_params(args.params).plot
    data = load_parsed(args.parsed)
    test = load_split(args.split)["test"]
    images, labels = data.images[test], data.labels[test]
    with reading(args.predictions, "evaluate"), np.load(args.predictions, allow_pickle=False) as saved:
        outputs = dict(saved)
        predictions, confidence = outputs["predictions"], outputs["probabilities"].max(1)
    history = read_dvclive_history(args.live)
    title, side = args.title, config.grid_size
    with atomic_dir(args.out) as out:  # the figures appear together, or not at all
        plot_curves(history, title, out / "curves.png")
        plot_confusion(confusion_matrix(labels, predictions, len(data.classes)), data.classes,
                       f"{title}: test confusion", out / "confusion.png")
        # Evenly spaced test rows: a fair sample whatever the order (mnist-5k is sorted by class).
        shown = evenly_spaced(len(test), side**2)
        plot_predictions(images[shown], labels[shown], predictions[shown], data.classes,
                         f"{title}: test predictions", out / "predictions.png")
        wrong = np.flatnonzero(predictions != labels)
        worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:side**2]
        plot_predictions(images[worst], labels[worst], predictions[worst], data.classes,
                         f"{title}: most confident mistakes", out / "mistakes.png", confidence[worst])
        bins = {key: outputs[f"reliability_{key}"] for key in ("count", "confidence", "accuracy")}
        plot_reliability(bins, expected_calibration_error(bins), title, out / "reliability.png")
        if "filters" in outputs:
            plot_filters(outputs["filters"], title, out / "filters.png")
        plot_embeddings(outputs["features"], labels[outputs["feature_rows"]], data.classes, title,
                        out / "embedding.png")


if __name__ == "__main__":
    run_stage(main)
