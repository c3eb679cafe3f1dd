"""The pixel-sequence models (eurnn, lstm): what the registry-wide test cannot see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models import create_model
from pipeline.models.eurnn import EPS, _EunnScan, rotate
from pipeline.models.sequence import pixel_permutation
from pipeline.runtime import UserError


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


def test_eurnn_recurrence_preserves_norm() -> None:
    """The recurrent transform U is unitary: ||U h|| = ||h|| for the default size, to 1e-5."""
    torch.manual_seed(0)
    model = create_model("eurnn", (1, 28, 28), 10, capacity=4)
    h = torch.randn(2, 32, 128, dtype=torch.complex64)  # (even/odd units, B, N/2)
    before, after = h.abs().square().sum((0, 2)).sqrt(), model.transition(h).abs().square().sum((0, 2)).sqrt()
    assert torch.allclose(after, before, rtol=1e-5, atol=0)


def test_eurnn_hand_written_backward_matches_finite_differences() -> None:
    """gradcheck of the scan (inputs, projection, U's nonzeros, bias) in float64 on a tiny instance."""
    torch.manual_seed(0)
    model = create_model("eurnn", (1, 2, 3), 4, hidden=4, capacity=3).double()
    x = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True)  # (T, C, B)
    weight = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)  # (2N, C)
    input_bias = torch.randn(8, dtype=torch.float64, requires_grad=True)
    values = model.unitary().detach().requires_grad_()
    bias = torch.randn(*model._scan_bias().shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *args: _EunnScan.apply(*args, model.pattern),
                                    (x, weight, input_bias, values, bias))


def reference_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's features by plain autograd: complex states (2, B, N/2), layer by layer, step by step."""
    coef, phase = model.coefficients()
    seq = model.sequence(x)  # (T, B, C)
    h = torch.zeros(2, x.shape[0], model.theta.shape[1], dtype=coef.dtype)
    for step in seq:
        z = torch.view_as_complex(model.input(step).unflatten(-1, (2, -1, 2))).transpose(0, 1) + rotate(h, coef, phase)
        r = (z.abs().square() + EPS * EPS).sqrt()
        h = torch.relu(r + model.bias) / r * z  # modReLU
    return torch.view_as_real(h).permute(1, 0, 2, 3).flatten(1)


@pytest.mark.parametrize(("hidden", "capacity", "side"), [(8, 3, 4), (36, 2, 9)])
def test_eurnn_scan_matches_plain_autograd(hidden: int, capacity: int, side: int) -> None:
    """Features and every parameter's gradient equal a step-by-step autograd reference, in float64.

    hidden 8 capacity 3: a block's window wraps around the state; 9 x 9 = 81 steps: more than a CHUNK."""
    torch.manual_seed(0)
    model = create_model("eurnn", (1, side, side), 4, hidden=hidden, capacity=capacity).double()
    with torch.no_grad():
        model.bias.uniform_(-1, 1)  # some units inactive: modReLU's zero branch is exercised too
    x = torch.randn(3, 1, side, side, dtype=torch.float64)
    weights = torch.randn(3, hidden * 2, dtype=torch.float64)
    grads = []
    for features in (model.forward_features, lambda x: reference_features(model, x)):
        model.zero_grad()
        out = features(x)
        (out * weights).sum().backward()
        grads.append([out.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) == 7  # features; input weight, bias, theta, phi, omega, bias
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)


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
