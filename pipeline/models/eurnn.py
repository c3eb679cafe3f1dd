"""Efficient unitary RNN (the EURNN notebook; Jing et al. 2017, "Tunable Efficient Unitary Neural Networks").

The hidden state h is N complex units (pairs of reals). Each step reads one pixel:

    h_t = modReLU(W x_t + b + U h_{t-1}),    U = diag(e^{i omega}) F_capacity ... F_1

A rotation layer F_l turns pairs of units (2k, 2k+1) (even layers) or (2k+1, 2k+2), wrapping around
(odd layers), by the 2x2 unitary [[e^{i phi} cos theta, -e^{i phi} sin theta], [sin theta, cos theta]].

This module is the model and its readable specification: `apply_unitary` (U, layer by layer) and
`EURNN.reference_features` (the plain step loop). Training and inference run the same recurrence through
the hand-written scan kernel in eurnn_scan.py, which the tests hold to that specification. Once per
forward pass, `EURNN.unitary` builds U's nonzeros from the parameters with ordinary autograd (a small
graph: `capacity` layers applied to the N basis vectors); the kernel takes it from there.
"""

from __future__ import annotations

import math

import torch
from pydantic import field_validator
from torch import Tensor, nn

from pipeline.models.eurnn_scan import EPS, EunnScan, ScanPattern, scan_inference
from pipeline.models.sequence import PixelSequence, SequenceConfig
from pipeline.schema import PositiveInt


class Config(SequenceConfig):
    hidden: PositiveInt = 256  # complex hidden units (the state holds 2 * hidden reals)
    capacity: PositiveInt = 2  # rotation layers in the recurrent unitary

    @field_validator("hidden")
    @classmethod
    def _even(cls, hidden: int) -> int:
        if hidden % 2:
            raise ValueError(f"must be even: rotations act on pairs of units (got {hidden})")
        return hidden


def _pair(even: Tensor, odd: Tensor, layer: int) -> tuple[Tensor, Tensor]:
    """The (first, second) units that layer `layer` turns together, each (B, N/2).

    Even layers pair units (2k, 2k+1); odd layers pair (2k+1, 2k+2), so their second unit is the next
    even unit, wrapping around."""
    return (even, odd) if layer % 2 == 0 else (odd, even.roll(-1, 1))


def _unpair(first: Tensor, second: Tensor, layer: int) -> tuple[Tensor, Tensor]:
    """Inverse of _pair: (first, second) -> (even, odd)."""
    return (first, second) if layer % 2 == 0 else (second.roll(1, 1), first)


def apply_unitary(h: Tensor, coef: Tensor, phase: Tensor) -> Tensor:
    """U h, layer by layer, on complex states h (2, B, N/2) (even units, odd units).

    coef (L, 4, N/2): per layer the 2x2 blocks [[a, b], [c, d]] of every pair; phase (2, 1, N/2)."""
    even, odd = h[0], h[1]
    for layer, (a, b, c, d) in enumerate(coef):  # `capacity` iterations of a few elementwise ops
        first, second = _pair(even, odd, layer)
        even, odd = _unpair(torch.addcmul(a * first, b, second), torch.addcmul(d * second, c, first), layer)
    return torch.stack([even, odd]) * phase


def complex_matrix(coef: Tensor, phase: Tensor) -> Tensor:
    """U as a dense complex (N, N) matrix over units in natural order: `apply_unitary` of the N basis vectors."""
    half = coef.shape[-1]
    basis = torch.eye(2 * half, dtype=coef.dtype, device=coef.device).view(2 * half, half, 2)
    columns = apply_unitary(basis.permute(2, 0, 1), coef, phase)  # [p, j, k] = U[2k + p, j]
    return columns.permute(2, 0, 1).reshape(2 * half, 2 * half)  # [k, p, j] -> row 2k + p


def real_matrix(u: Tensor) -> Tensor:
    """Complex (N, N) -> the same map on [real parts; imaginary parts], a real (2N, 2N) matrix."""
    return torch.cat([torch.cat([u.real, -u.imag], 1), torch.cat([u.imag, u.real], 1)], 0)


class EURNN(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, config: Config) -> None:
        super().__init__()
        half = config.hidden // 2
        self.sequence = PixelSequence(image_shape, config)
        self.input = nn.Linear(image_shape[0], 2 * config.hidden)  # pixel(s) -> complex input, as real pairs
        self.theta = nn.Parameter(torch.empty(config.capacity, half).uniform_(-math.pi, math.pi))  # rotation
        self.phi = nn.Parameter(torch.empty(config.capacity, half).uniform_(-math.pi, math.pi))  # pair phase
        self.omega = nn.Parameter(torch.empty(2, 1, half).uniform_(-math.pi, math.pi))  # final diagonal phase
        self.bias = nn.Parameter(torch.full((2, 1, half), 0.01))  # modReLU bias (the EURNN notebook: 0.01)
        self.head = nn.Linear(2 * config.hidden, num_classes)
        self.num_features = 2 * config.hidden
        # All-ones rotations: every structurally nonzero entry of U is a sum of positive terms.
        ones = torch.ones(config.capacity, 4, half, dtype=torch.complex64)
        reach = (complex_matrix(ones, torch.ones(2, 1, half, dtype=torch.complex64)) != 0).repeat(2, 2)
        self.pattern = ScanPattern(config.hidden, config.capacity, reach)

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """(coef (L, 4, N/2), phase (2, 1, N/2)): per pair [[e^{i phi} cos, -e^{i phi} sin], [sin, cos]]."""
        cos, sin = self.theta.cos(), self.theta.sin()  # (L, N/2)
        rot = torch.polar(torch.ones_like(self.phi), self.phi)
        coef = torch.stack([rot * cos, -rot * sin, torch.complex(sin, torch.zeros_like(sin)),
                            torch.complex(cos, torch.zeros_like(cos))], dim=1)
        return coef, torch.polar(torch.ones_like(self.omega), self.omega)

    def unitary(self) -> Tensor:
        """U's nonzeros (nnz,) in the scan's CSR order, differentiable in theta, phi, omega."""
        matrix = real_matrix(complex_matrix(*self.coefficients()))  # (2N, 2N), natural order
        return matrix[self.pattern.natural_rows, self.pattern.natural_cols]

    def transition(self, h: Tensor) -> Tensor:
        """The sparse recurrent map the scan uses, applied to complex states h (2, B, N/2)."""
        reals = torch.view_as_real(h).permute(1, 0, 2, 3).flatten(1)  # (B, 2N), feature order
        out = torch.mm(self.pattern.matrices(self.unitary())[0], reals[:, self.pattern.from_features].T)
        out = out[self.pattern.to_features].T.reshape(-1, 2, h.shape[2], 2)  # (B, p, k, real/imaginary)
        return torch.view_as_complex(out.contiguous()).transpose(0, 1)

    def _scan_bias(self) -> Tensor:
        """The modReLU bias (2, 1, N/2) as (blocks, BLOCK, 1) over units in natural order."""
        return self.bias.squeeze(1).T.reshape(-1, self.pattern.block, 1)

    def reference_features(self, x: Tensor) -> Tensor:
        """The readable specification of forward_features, step by step with plain autograd in complex numbers:
        h_t = modReLU(W x_t + b + U h_{t-1}). Slow (a graph of T x capacity steps); the tests hold the scan
        kernel (eurnn_scan.py) to it, values and gradients."""
        coef, phase = self.coefficients()
        seq = self.sequence(x)  # (T, B, C)
        h = torch.zeros(2, x.shape[0], self.theta.shape[1], dtype=coef.dtype, device=coef.device)  # (2, B, N/2)
        for step in seq:
            z = torch.view_as_complex(self.input(step).unflatten(-1, (2, -1, 2))).transpose(0, 1)
            z = z + apply_unitary(h, coef, phase)
            r = (z.abs().square() + EPS * EPS).sqrt()
            h = torch.relu(r + self.bias) / r * z  # modReLU
        return torch.view_as_real(h).permute(1, 0, 2, 3).flatten(1)  # (B, 2N), feature order

    def forward_features(self, x: Tensor) -> Tensor:
        # The scan runs in the parameters' dtype (float32) on every device, under bf16 autocast too (only the
        # head takes bf16): its sparse U h product has no mixed-dtype kernel, and T = 784 steps would
        # compound bf16 rounding.
        with torch.autocast(x.device.type, enabled=False):
            seq = self.sequence(x.to(self.input.weight.dtype))  # (T, B, C), the parameters' dtype
            weight = self.input.weight[self.pattern.from_features]
            bias = self.input.bias[self.pattern.from_features]
            values, modrelu_bias = self.unitary(), self._scan_bias()
            if torch.is_grad_enabled():
                h = EunnScan.apply(seq.transpose(1, 2), weight, bias, values, modrelu_bias, self.pattern)
            else:  # inference: no stored steps, so memory does not grow with T x B
                h = scan_inference(seq, weight, bias, values, modrelu_bias, self.pattern)
        return h[self.pattern.to_features].T  # (B, 2N): the last state, in feature order

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))  # (B, num_classes) logits


def build(image_shape: tuple[int, int, int], num_classes: int, config: Config) -> EURNN:
    return EURNN(image_shape, num_classes, config)
