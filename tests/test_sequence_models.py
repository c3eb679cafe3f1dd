"""The pixel-sequence models and resnet: what the registry-wide test cannot see."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.models import create_model
from pipeline.models.eurnn import _EunnScan
from pipeline.models.sequence import pixel_permutation
from pipeline.runtime import UserError


def test_permutation_is_seed_001s() -> None:
    order = list(range(784))
    np.random.RandomState(0).shuffle(order)  # exactly what seed 001 ran
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


def test_eurnn_recurrence_preserves_norm() -> None:
    """The recurrent transform U is unitary: ||U h|| = ||h|| for the default size, to 1e-5."""
    torch.manual_seed(0)
    model = create_model("eurnn", (1, 28, 28), 10, capacity=4)
    h = torch.randn(2, 32, 128, dtype=torch.complex64)  # (even/odd units, B, N/2)
    before, after = h.abs().square().sum((0, 2)).sqrt(), model.transition(h).abs().square().sum((0, 2)).sqrt()
    assert torch.allclose(after, before, rtol=1e-5, atol=0)


def test_eurnn_hand_written_backward_matches_finite_differences() -> None:
    torch.manual_seed(0)
    model = create_model("eurnn", (1, 3, 3), 4, hidden=6, capacity=3).double()
    coef, phase = (t.detach().requires_grad_() for t in model.coefficients())
    u = torch.randn(5, 2, 2, 3, dtype=torch.complex128, requires_grad=True)  # (T, 2, B, N/2)
    bias = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_EunnScan.apply, (u, coef, phase, bias))


def test_eurnn_inference_path_matches_training_path() -> None:
    torch.manual_seed(0)
    model = create_model("eurnn", (1, 6, 6), 4, hidden=8)
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        inference = model(x)
    torch.testing.assert_close(model(x), inference)


def test_eurnn_odd_hidden_is_refused() -> None:
    with pytest.raises(UserError, match=r"models\.eurnn\.arch\.hidden: must be even"):
        create_model("eurnn", (1, 28, 28), 10, hidden=7)


def test_resnet_shape_and_head_init() -> None:
    torch.manual_seed(0)
    model = create_model("resnet", (1, 28, 28), 10)
    assert isinstance(model.conv[0].shortcut, torch.nn.Conv2d)  # 1 -> 64 channels: a 1x1 projection
    assert model.fc[0].in_features == 64 * 7 * 7  # two 2x2 pools: 28 -> 7
    assert model.head.weight.abs().max() < 1e-3  # scaled by 0.001: near-uniform first predictions
    with torch.no_grad():
        loss = F.cross_entropy(model.eval()(torch.randn(8, 1, 28, 28)), torch.arange(8))
    assert loss.item() == pytest.approx(np.log(10), abs=1e-2)


def test_resnet_pools_must_fit() -> None:
    with pytest.raises(UserError, match=r"models\.resnet\.arch\.pool_after: block 7 does not exist"):
        create_model("resnet", (1, 28, 28), 10, pool_after=[7])
    with pytest.raises(UserError, match=r"pool_after: 3 pools do not fit a 4x4 image"):
        create_model("resnet", (1, 4, 4), 10, blocks=3, pool_after=[1, 2, 3])
