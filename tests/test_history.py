"""Reading the train stage's dvclive logs back as training histories."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.history import read_dvclive_history


def write_dvclive_tree(live_dir: Path, epochs: int = 4) -> None:
    """plots/metrics/{train,val}/{loss,accuracy}.tsv as dvclive writes them: timestamp, step, value."""
    for subset, offset in (("train", 0.0), ("val", 0.1)):
        folder = live_dir / "plots" / "metrics" / subset
        folder.mkdir(parents=True)
        for metric in ("loss", "accuracy"):
            values = [(1 / (step + 1) if metric == "loss" else 0.5 + 0.1 * step) + offset for step in range(epochs)]
            rows = [f"{1700000000000 + step}\t{step}\t{value}" for step, value in enumerate(values)]
            (folder / f"{metric}.tsv").write_text("\n".join([f"timestamp\tstep\t{metric}", *rows]) + "\n")


def test_read_dvclive_history(tmp_path: Path) -> None:
    write_dvclive_tree(tmp_path, epochs=4)
    history = read_dvclive_history(tmp_path)
    assert set(history) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy"}
    epochs, values = history["val/accuracy"]
    np.testing.assert_array_equal(epochs, [1, 2, 3, 4])  # dvclive's step 0 is epoch 1
    np.testing.assert_allclose(values, [0.6, 0.7, 0.8, 0.9])
