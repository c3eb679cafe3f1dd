"""EURNN: the scan kernel (pipeline/models/eurnn_scan.py) against the model's plain step loop, its hand-written
backward against finite differences, a unitary recurrence, and the inference path."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import create_model
from pipeline.models.eurnn_scan import EunnScan
from pipeline.runtime import UserError


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
    assert torch.autograd.gradcheck(lambda *args: EunnScan.apply(*args, model.pattern),
                                    (x, weight, input_bias, values, bias))


@pytest.mark.parametrize(("hidden", "capacity", "side"), [(8, 3, 4), (36, 2, 9)])
def test_eurnn_scan_matches_plain_autograd(hidden: int, capacity: int, side: int) -> None:
    """Features and every parameter's gradient of the scan kernel equal the plain step loop's, in float64.

    hidden 8 capacity 3: a block's window wraps around the state; 9 x 9 = 81 steps: more than a CHUNK."""
    torch.manual_seed(0)
    model = create_model("eurnn", (1, side, side), 4, hidden=hidden, capacity=capacity).double()
    with torch.no_grad():
        model.bias.uniform_(-1, 1)  # some units inactive: modReLU's zero branch is exercised too
    x = torch.randn(3, 1, side, side, dtype=torch.float64)
    weights = torch.randn(3, hidden * 2, dtype=torch.float64)
    grads = []
    for features in (model.forward_features, model.reference_features):
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
