"""Stage data_figures: a sample grid (one row per class) and the label histogram of each split."""

import numpy as np

from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split
from pipeline.plots import plot_label_histogram, plot_samples
from pipeline.runtime import run_stage
from src import PARSED, SPLIT, stage_args

SAMPLES_PER_CLASS = 10  # columns of the sample grid


def main() -> None:
    args = stage_args(__doc__, parsed=PARSED, split=SPLIT, out="directory for samples.png and labels.png")

    data, split = load_parsed(args.parsed), load_split(args.split)
    train = split["train"]
    plot_samples(data.images[train], data.labels[train], data.classes, SAMPLES_PER_CLASS,
                 f"{data.name}: training images", args.out / "samples.png")
    counts = {subset: np.bincount(data.labels[rows], minlength=len(data.classes)) for subset, rows in split.items()}
    plot_label_histogram(counts, data.classes, f"{data.name}: images per class", args.out / "labels.png")


if __name__ == "__main__":
    run_stage(main)
