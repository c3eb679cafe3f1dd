"""Reading the train stage's dvclive logs back as training histories."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import write_dvclive_tree
from pipeline.history import read_dvclive_history


def test_read_dvclive_history(tmp_path: Path) -> None:
    write_dvclive_tree(tmp_path, epochs=4)
    history = read_dvclive_history(tmp_path)
    assert set(history) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy"}
    epochs, values = history["val/accuracy"]
    np.testing.assert_array_equal(epochs, [1, 2, 3, 4])  # dvclive's step 0 is epoch 1
    np.testing.assert_allclose(values, [0.6, 0.7, 0.8, 0.9])
