"""Efficient unitary RNN (seed 001; Jing et al. 2017, "Tunable Efficient Unitary Neural Networks").

The hidden state h is N complex units (a complex tensor: pairs of reals). Each step reads one pixel:

    h_t = modReLU(W x_t + b + U h_{t-1}),    U = diag(e^{i omega}) F_capacity ... F_1

A rotation layer F_l turns pairs of units (2k, 2k+1) (even layers) or (2k+1, 2k+2), wrapping around
(odd layers), by the 2x2 unitary [[e^{i phi} cos theta, -e^{i phi} sin theta], [sin theta, cos theta]].
Written per unit, a layer is v -> D * v + O * v[partner] with complex coefficient vectors D, O (N,):
O(N) work per layer, where a dense U would cost O(N^2).

Speed: the coefficients depend on the parameters, not on the step, so they are computed once per
forward pass (the only loop over layers that touches parameters). The T-step recurrence and its
backward pass are one autograd Function (`_EunnScan`) with a hand-written backward: about ten
tensor ops per step, no autograd graph of T x layers nodes, and no Python loop over unit pairs.
bench/eurnn.py times it against the PyPI package torch_eunn that seed 001 used.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from pipeline.models.sequence import PixelSequence, SequenceConfig

EPS = 1e-5  # modReLU uses |z| = sqrt(|z|^2 + EPS^2): smooth at z = 0


class Config(SequenceConfig):
    hidden: Annotated[int, Field(gt=0)] = 256  # complex hidden units (the state holds 2 * hidden reals)
    capacity: Annotated[int, Field(gt=0)] = 2  # rotation layers in the recurrent unitary

    @field_validator("hidden")
    @classmethod
    def _even(cls, hidden: int) -> int:
        if hidden % 2:
            raise ValueError(f"must be even: rotations act on pairs of units (got {hidden})")
        return hidden


def _modrelu_parts(z: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For complex z (2, B, N/2): smoothed |z|, the active mask |z| + bias > 0, and relu(|z| + bias) / |z|."""
    r = (z.real.square() + z.imag.square() + EPS * EPS).sqrt_()
    active = r + bias
    return r, active > 0, active.relu_().div_(r)


def modrelu(z: Tensor, bias: Tensor) -> Tensor:
    """modReLU(z) = relu(|z| + bias) * z / |z| per complex unit."""
    return z * _modrelu_parts(z, bias)[2]


def _pair(even: Tensor, odd: Tensor, layer: int) -> tuple[Tensor, Tensor]:
    """The (first, second) units that layer `layer` turns together, each (B, N/2).

    Even layers pair units (2k, 2k+1); odd layers pair (2k+1, 2k+2), so their second unit is the next
    even unit, wrapping around."""
    return (even, odd) if layer % 2 == 0 else (odd, even.roll(-1, 1))


def _unpair(first: Tensor, second: Tensor, layer: int) -> tuple[Tensor, Tensor]:
    """Inverse of _pair: (first, second) -> (even, odd)."""
    return (first, second) if layer % 2 == 0 else (second.roll(1, 1), first)


def rotate(h: Tensor, coef: Tensor, phase: Tensor) -> Tensor:
    """The recurrent unitary on complex states h (2, B, N/2) (even units, odd units).

    coef (L, 4, N/2): per layer the 2x2 blocks [[a, b], [c, d]] of every pair; phase (2, 1, N/2)."""
    even, odd = h[0], h[1]
    for layer, (a, b, c, d) in enumerate(coef):  # `capacity` iterations of a few elementwise ops
        first, second = _pair(even, odd, layer)
        even, odd = _unpair(torch.addcmul(a * first, b, second), torch.addcmul(d * second, c, first), layer)
    return torch.stack([even, odd]) * phase


class _EunnScan(torch.autograd.Function):
    """h_t = modReLU(u_t + U h_{t-1}) for t = 1..T from h_0 = 0; returns h_T. Backward by hand (BPTT).

    u (T, 2, B, N/2) complex; coef (L, 4, N/2) complex; phase (2, 1, N/2) complex; bias (2, 1, N/2) real.
    """

    @staticmethod
    def forward(ctx: Any, u: Tensor, coef: Tensor, phase: Tensor, bias: Tensor) -> Tensor:
        states = u.new_zeros(u.shape[0] + 1, *u.shape[1:])  # h_0 .. h_T, kept for the backward pass
        pre = torch.empty_like(u)  # z_t = u_t + U h_{t-1}, kept for the backward pass
        for t in range(u.shape[0]):
            torch.add(u[t], rotate(states[t], coef, phase), out=pre[t])
            torch.mul(pre[t], _modrelu_parts(pre[t], bias)[2], out=states[t + 1])
        ctx.save_for_backward(coef, phase, bias, states, pre)
        return states[-1].clone()

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # Complex gradients follow PyTorch's convention dL/dRe + i dL/dIm: for y = a * x the gradient
        # of x is g * conj(a), and of a is g * conj(x).
        coef, phase, bias, states, pre = ctx.saved_tensors
        grad_u = torch.empty_like(pre)
        grad_coef = torch.zeros(*coef.shape[:2], *grad_h.shape[1:], dtype=coef.dtype)  # (L, 4, B, N/2)
        grad_phase = torch.zeros_like(grad_h)
        grad_bias = torch.zeros_like(grad_h.real)
        coef_c, phase_c = coef.conj(), phase.conj()
        grad = grad_h
        for t in reversed(range(pre.shape[0])):
            z = pre[t]
            r, active, scale = _modrelu_parts(z, bias)
            dot = (grad.real * z.real + grad.imag * z.imag) * active  # Re(g conj z) on active units
            grad_bias += dot / r
            # d/dz of relu(r + b) z / r = scale * g - b / r^3 Re(g conj z) z   (active units only)
            g = torch.addcmul(grad * scale, dot * (-bias / (r * r * r)), z, out=grad_u[t])
            # each layer's input at this step, recomputed: cheaper than storing T x L states
            pairs, even, odd = [], states[t][0], states[t][1]
            for layer, (a, b, c, d) in enumerate(coef):
                first, second = _pair(even, odd, layer)
                pairs.append((first, second))
                even, odd = _unpair(torch.addcmul(a * first, b, second), torch.addcmul(d * second, c, first), layer)
            grad_phase.addcmul_(g, torch.stack([even, odd]).conj())
            g = g * phase_c
            g_even, g_odd = g[0], g[1]
            for layer in reversed(range(len(coef))):
                (first, second), (a, b, c, d) = pairs[layer], coef_c[layer]
                g_first, g_second = _pair(g_even, g_odd, layer)
                grads = grad_coef[layer]
                grads[0].addcmul_(g_first, first.conj())
                grads[1].addcmul_(g_first, second.conj())
                grads[2].addcmul_(g_second, first.conj())
                grads[3].addcmul_(g_second, second.conj())
                g_even, g_odd = _unpair(torch.addcmul(a * g_first, c, g_second),
                                        torch.addcmul(d * g_second, b, g_first), layer)
            grad = torch.stack([g_even, g_odd])  # dL/dh_{t-1}
        return grad_u, grad_coef.sum(2), grad_phase.sum(1, keepdim=True), grad_bias.sum(1, keepdim=True)


class EURNN(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, config: Config) -> None:
        super().__init__()
        half = config.hidden // 2
        self.sequence = PixelSequence(image_shape, config)
        self.input = nn.Linear(image_shape[0], 2 * config.hidden)  # pixel(s) -> complex input, as real pairs
        self.theta = nn.Parameter(torch.empty(config.capacity, half).uniform_(-math.pi, math.pi))  # rotation
        self.phi = nn.Parameter(torch.empty(config.capacity, half).uniform_(-math.pi, math.pi))  # pair phase
        self.omega = nn.Parameter(torch.empty(2, 1, half).uniform_(-math.pi, math.pi))  # final diagonal phase
        self.bias = nn.Parameter(torch.full((2, 1, half), 0.01))  # modReLU bias (seed 001: 0.01)
        self.head = nn.Linear(2 * config.hidden, num_classes)
        self.num_features = 2 * config.hidden

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """(coef (L, 4, N/2), phase (2, 1, N/2)): per pair [[e^{i phi} cos, -e^{i phi} sin], [sin, cos]]."""
        cos, sin = self.theta.cos(), self.theta.sin()  # (L, N/2)
        rot = torch.polar(torch.ones_like(self.phi), self.phi)
        coef = torch.stack([rot * cos, -rot * sin, torch.complex(sin, torch.zeros_like(sin)),
                            torch.complex(cos, torch.zeros_like(cos))], dim=1)
        return coef, torch.polar(torch.ones_like(self.omega), self.omega)

    def transition(self, h: Tensor) -> Tensor:
        """The recurrent unitary U applied to complex states h (2, B, N/2)."""
        return rotate(h, *self.coefficients())

    def _inputs(self, seq: Tensor) -> Tensor:
        """(..., B, C) pixels -> complex (..., 2, B, N/2) inputs (even units, odd units)."""
        u = torch.view_as_complex(self.input(seq).unflatten(-1, (2, -1, 2)))  # (..., B, 2, N/2)
        return u.transpose(-3, -2).contiguous()

    def forward_features(self, x: Tensor) -> Tensor:
        seq = self.sequence(x)  # (T, B, C)
        coef, phase = self.coefficients()
        if torch.is_grad_enabled():
            h = _EunnScan.apply(self._inputs(seq), coef, phase, self.bias)
        else:  # inference: project each step's input on the fly, so memory does not grow with T x B
            h = torch.zeros(2, seq.shape[1], self.theta.shape[1], dtype=coef.dtype, device=seq.device)
            for step in seq:
                h = modrelu(self._inputs(step) + rotate(h, coef, phase), self.bias)
        return torch.view_as_real(h).permute(1, 0, 2, 3).flatten(1)  # (B, 2N): the last state, as reals

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))  # (B, num_classes) logits


def build(image_shape: tuple[int, int, int], num_classes: int, config: Config) -> EURNN:
    return EURNN(image_shape, num_classes, config)
