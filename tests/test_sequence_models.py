"""The pixel-sequence input of eurnn and lstm: what the registry-wide test cannot see (eurnn's own: test_eurnn.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models import create_model
from pipeline.models.sequence import pixel_permutation


def test_permutation_is_the_eurnn_notebooks() -> None:
    order = list(range(784))
    np.random.RandomState(0).shuffle(order)  # exactly what the EURNN notebook ran
    np.testing.assert_array_equal(pixel_permutation(784, 0), order)


@pytest.mark.parametrize("name", ["eurnn", "lstm"])
def test_pixel_order(name: str) -> None:
    """Step t reads pixel order[t]: permuted by default, row by row with permute: false."""
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    permuted = create_model(name, (1, 4, 4), 3).sequence(x)  # (T, B, C)
    plain = create_model(name, (1, 4, 4), 3, permute=False).sequence(x)
    assert plain.shape == (16, 2, 1)
    torch.testing.assert_close(plain[:, 1, 0], torch.arange(16.0) + 16)
    torch.testing.assert_close(permuted[:, 0, 0], torch.from_numpy(pixel_permutation(16, 0)).float())
