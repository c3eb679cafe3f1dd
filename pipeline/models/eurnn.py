"""Efficient unitary RNN (seed 001; Jing et al. 2017, "Tunable Efficient Unitary Neural Networks").

The hidden state h is N complex units (pairs of reals). Each step reads one pixel:

    h_t = modReLU(W x_t + b + U h_{t-1}),    U = diag(e^{i omega}) F_capacity ... F_1

A rotation layer F_l turns pairs of units (2k, 2k+1) (even layers) or (2k+1, 2k+2), wrapping around
(odd layers), by the 2x2 unitary [[e^{i phi} cos theta, -e^{i phi} sin theta], [sin theta, cos theta]].

Speed: U depends on the parameters, not on the step, and each layer moves a unit's value at most one
unit along, so U is banded: unit j depends on at most 2 * capacity units within capacity of j. Written
over the 2N reals of the state, U is a sparse real matrix with 4 * capacity nonzeros per row. Once per
forward pass, `EURNN.unitary` builds those nonzeros from the parameters with ordinary autograd (a
small graph: `capacity` layers applied to the N basis vectors). The T-step recurrence is one autograd
Function (`_EunnScan`) over plain real tensors with a hand-written backward. A step is 9 ops forward
(one CSR sparse-dense product that adds U h to the precomputed input projection, 8 elementwise for
modReLU) and 10 backward (9 elementwise for modReLU's derivative, one CSR product for U^T g); no Python
loop over layers or units. The gradients of U's nonzeros and of the input projection are batched
matmuls every CHUNK steps (`_Pattern.accumulate_products`: each block of BLOCK units times the window
of units it reaches). On CPU the steps are bound by per-op overhead (~5-20 us per op on (2N, B) =
(512, 100) tensors) and by first touches of the stored (T, ., B) tensors. bench/eurnn.py times it
against the PyPI package torch_eunn that seed 001 used.

Inside the scan the 2N reals are ordered by block of BLOCK units, then real/imaginary part, then unit:
the state (2N, B) viewed as (blocks, 2, BLOCK, B). The model's input projection and features keep the
order (even/odd unit, pair, real/imaginary) of its parameters and of saved weights.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from pydantic import field_validator
from torch import Tensor, nn

from pipeline.models.sequence import PixelSequence, SequenceConfig
from pipeline.schema import PositiveInt

EPS = 1e-5  # modReLU uses |z| = sqrt(|z|^2 + EPS^2): smooth at z = 0
BLOCK = 16  # units per block of the weight-gradient products (bigger: fewer, larger matmuls, more waste)
CHUNK = 64  # time steps per weight-gradient product: bounds its temporary memory to CHUNK x B x 2.5N


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


def rotate(h: Tensor, coef: Tensor, phase: Tensor) -> Tensor:
    """The recurrent unitary, layer by layer, on complex states h (2, B, N/2) (even units, odd units).

    coef (L, 4, N/2): per layer the 2x2 blocks [[a, b], [c, d]] of every pair; phase (2, 1, N/2)."""
    even, odd = h[0], h[1]
    for layer, (a, b, c, d) in enumerate(coef):  # `capacity` iterations of a few elementwise ops
        first, second = _pair(even, odd, layer)
        even, odd = _unpair(torch.addcmul(a * first, b, second), torch.addcmul(d * second, c, first), layer)
    return torch.stack([even, odd]) * phase


def complex_matrix(coef: Tensor, phase: Tensor) -> Tensor:
    """U as a dense complex (N, N) matrix over units in natural order: `rotate` of the N basis vectors."""
    half = coef.shape[-1]
    basis = torch.eye(2 * half, dtype=coef.dtype, device=coef.device).view(2 * half, half, 2)
    columns = rotate(basis.permute(2, 0, 1), coef, phase)  # [p, j, k] = U[2k + p, j]
    return columns.permute(2, 0, 1).reshape(2 * half, 2 * half)  # [k, p, j] -> row 2k + p


def real_matrix(u: Tensor) -> Tensor:
    """Complex (N, N) -> the same map on [real parts; imaginary parts], a real (2N, 2N) matrix."""
    return torch.cat([torch.cat([u.real, -u.imag], 1), torch.cat([u.imag, u.real], 1)], 0)


class _Pattern(nn.Module):
    """Where U's nonzeros are, in the scan's order of the 2N reals, and index tables built from that.

    Buffers only (not saved: they follow from hidden and capacity), so they move with the model."""

    def __init__(self, hidden: int, capacity: int) -> None:
        super().__init__()
        half = hidden // 2
        self.block = max(size for size in range(1, min(BLOCK, hidden) + 1) if hidden % size == 0)
        self.window = self.block + 2 * capacity  # units a block's rows can reach: capacity either side
        blocks = hidden // self.block
        # The scan's real r = (block, part, unit in block) <-> natural real part * N + unit.
        unit = torch.arange(hidden).view(blocks, 1, self.block)
        part = torch.arange(2).view(1, 2, 1)
        natural = (part * hidden + unit).flatten()  # scan order -> natural order
        # All-ones rotations: every structurally nonzero entry is a sum of positive terms.
        ones = torch.ones(capacity, 4, half, dtype=torch.complex64)
        reach = (complex_matrix(ones, torch.ones(2, 1, half, dtype=torch.complex64)) != 0).repeat(2, 2)
        reach = reach[natural][:, natural]  # (2N, 2N) real entries, in scan order
        rows, cols = reach.nonzero().unbind(1)  # row-major: CSR order
        rows_t, cols_t = reach.T.nonzero().unbind(1)
        position = torch.full((2 * hidden, 2 * hidden), -1, dtype=torch.long)
        position[rows, cols] = torch.arange(len(rows))
        self.register_buffer("natural_rows", natural[rows], persistent=False)  # gather from real_matrix
        self.register_buffer("natural_cols", natural[cols], persistent=False)
        self.register_buffer("crow", _crow(rows, 2 * hidden), persistent=False)
        self.register_buffer("col", cols.int(), persistent=False)
        self.register_buffer("crow_t", _crow(rows_t, 2 * hidden), persistent=False)
        self.register_buffer("col_t", cols_t.int(), persistent=False)
        self.register_buffer("transpose", position[cols_t, rows_t], persistent=False)  # U^T's values in U's
        # Weight gradient: block b's rows meet the reals of units b * block - capacity + q, q < window.
        start = torch.arange(blocks).view(blocks, 1, 1) * self.block - capacity
        window_unit = (start + torch.arange(self.window).view(1, 1, -1)) % hidden  # (blocks, 1, window)
        scan_index = torch.empty(2 * hidden, dtype=torch.long)
        scan_index[natural] = torch.arange(2 * hidden)  # natural order -> scan order
        self.register_buffer("window_rows", scan_index[(part * hidden + window_unit).flatten()], persistent=False)
        block, local = rows // (2 * self.block), rows % (2 * self.block)
        col_part, col_unit = natural[cols] // hidden, natural[cols] % hidden
        q = (col_unit - block * self.block + capacity) % hidden  # where that unit sits in the window
        width = 2 * self.window
        self.register_buffer("grad_index", (block * 2 * self.block + local) * width + col_part * self.window + q,
                             persistent=False)
        # Linear outputs / features are ordered (even/odd unit p, pair k, part c): index p * N + 2k + c.
        natural_unit, natural_part = natural % hidden, natural // hidden
        feature = (natural_unit % 2) * hidden + (natural_unit // 2) * 2 + natural_part  # of each scan real
        self.register_buffer("from_features", feature, persistent=False)  # scan = features[from_features]
        self.register_buffer("to_features", torch.argsort(feature), persistent=False)  # the inverse

    def matrices(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """(U, U^T) as CSR matrices from U's nonzeros `values` (nnz,)."""
        size = (len(self.crow) - 1,) * 2
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we use
            warnings.simplefilter("ignore")
            u = torch.sparse_csr_tensor(self.crow, self.col, values, size, check_invariants=False)
            u_t = torch.sparse_csr_tensor(self.crow_t, self.col_t, values[self.transpose], size,
                                          check_invariants=False)
        return u, u_t

    def accumulate_products(self, total: Tensor, rows: Tensor, z: Tensor, scale: Tensor, start: int) -> None:
        """total (blocks, 2 BLOCK, 2 window) += sum over steps t and batch of dL/dz_t[block rows] h_{t-1}[window].

        rows (2N, t, B): dL/dz_t for the steps t = start, start + 1, ... in scan order; z (T, 2N, B) and
        scale (T, blocks, BLOCK, B) give h_t = scale_t z_t per unit. One batched matmul over the blocks."""
        first = max(start, 1)  # h_0 = 0: step 0 adds nothing
        stop = start + rows.shape[1]
        if first >= stop:
            return
        blocks, batch = scale.shape[1], z.shape[2]
        h = z.new_empty(z.shape[1], stop - first, batch)  # (2N, t, B): rows of h, each contiguous over (t, B)
        torch.mul(z[first - 1:stop - 1].view(-1, blocks, 2, self.block, batch), scale[first - 1:stop - 1, :, None],
                  out=h.transpose(0, 1).view(-1, blocks, 2, self.block, batch))
        window = h.index_select(0, self.window_rows).view(blocks, 2 * self.window, -1)
        rows = rows[:, first - start:].reshape(blocks, 2 * self.block, -1)
        total.baddbmm_(rows, window.transpose(1, 2))

    def values_grad(self, total: Tensor) -> Tensor:
        """dL/d(values) (nnz,) from the products accumulate_products summed."""
        return total.flatten()[self.grad_index]


def _crow(rows: Tensor, size: int) -> Tensor:
    """CSR row offsets (size + 1,) of sorted row indices."""
    return torch.cat([rows.new_zeros(1), torch.bincount(rows, minlength=size).cumsum(0)]).int()


def _modrelu_step(h: Tensor, z: Tensor, rho: Tensor, scale: Tensor, bias: Tensor, eps2: Tensor, one: Tensor,
                  matrix: Tensor) -> None:
    """One step in place: z += U h (z holds the input u_t), rho = 1/|z|, scale = relu(1 + bias rho), h = scale z.

    h, z (2N, B) in scan order; rho, scale (blocks, BLOCK, B); bias (blocks, BLOCK, B).
    modReLU(z) = relu(|z| + b) z / |z| = relu(1 + b / |z|) z for |z| > 0."""
    z.addmm_(matrix, h)
    parts = z.view(*rho.shape[:1], 2, *rho.shape[1:])  # (blocks, real/imaginary, BLOCK, B)
    torch.addcmul(eps2, parts[:, 0], parts[:, 0], out=rho)
    rho.addcmul_(parts[:, 1], parts[:, 1]).rsqrt_()
    torch.addcmul(one, bias, rho, out=scale).relu_()
    torch.mul(parts, scale[:, None], out=h.view_as(parts))


class _EunnScan(torch.autograd.Function):
    """z_t = W x_t + c + U h_{t-1}, h_t = modReLU(z_t) for t = 1..T from h_0 = 0; returns h_T (2N, B).

    x (T, C, B) inputs; weight (2N, C), input_bias (2N,) the input projection and the result in scan
    order; values (nnz,) U's nonzeros; bias (blocks, BLOCK, 1) modReLU's. Backward by hand (BPTT):
    per step only what the recursion needs; the weight gradients every CHUNK steps, batched.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx: Any, x: Tensor, weight: Tensor, input_bias: Tensor, values: Tensor, bias: Tensor,
                pattern: _Pattern) -> Tensor:
        matrix, matrix_t = pattern.matrices(values)
        z = torch.baddbmm(input_bias[:, None], weight.expand(len(x), -1, -1), x)  # (T, 2N, B), then += U h
        scale = z.new_empty(z.shape[0], *bias.shape[:2], z.shape[2])  # relu(1 + b / |z_t|), kept
        active_rho = torch.empty_like(scale)  # 1 / |z_t| where the unit is active, else 0; kept
        h = z.new_zeros(z.shape[1:])
        eps2, one, full_bias = z.new_tensor(EPS * EPS), z.new_tensor(1.0), bias.expand_as(scale[0]).contiguous()
        for t in range(z.shape[0]):
            _modrelu_step(h, z[t], active_rho[t], scale[t], full_bias, eps2, one, matrix)
            active_rho[t].mul_(torch.sign(scale[t]))  # scale >= 0: its sign is the active mask
        ctx.save_for_backward(x, weight, full_bias, z, scale, active_rho)
        ctx.pattern, ctx.matrix_t = pattern, matrix_t
        return h

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        # For h = s z with s = relu(1 + b rho), rho = (|z|^2 + EPS^2)^(-1/2), on active units:
        #   dL/dz = s g - b rho^3 Re(g conj z) z,   dL/db = rho Re(g conj z);   inactive units: 0.
        x, weight, full_bias, z, scale, active_rho = ctx.saved_tensors
        steps, reals, batch = z.shape
        pattern = ctx.pattern
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_weight, grad_input_bias = torch.zeros_like(weight), z.new_zeros(reals)
        grad_bias, minus_bias = torch.zeros_like(full_bias), -full_bias  # (blocks, BLOCK, B)
        products = z.new_zeros(scale.shape[1], 2 * pattern.block, 2 * pattern.window)
        # dL/dz_t for a chunk of steps, reused; (2N, t, B): as the weight gradients' matmuls read it
        grad_z = z.new_empty(reals, min(CHUNK, steps), batch)
        dot = torch.empty_like(full_bias)
        grad = grad_h.clone()  # dL/dh_t, (2N, B)
        for stop in range(steps, 0, -CHUNK):
            start = max(stop - CHUNK, 0)
            for t in reversed(range(start, stop)):
                parts, grads = z[t].view(-1, 2, *dot.shape[1:]), grad.view(-1, 2, *dot.shape[1:])
                torch.mul(grads[:, 0], parts[:, 0], out=dot)
                dot.addcmul_(grads[:, 1], parts[:, 1]).mul_(active_rho[t])  # rho Re(g conj z) on active units
                grad_bias += dot
                dot.mul_(active_rho[t]).mul_(active_rho[t]).mul_(minus_bias)  # -b rho^3 Re(g conj z)
                out = grad_z[:, t - start].view_as(parts)
                torch.mul(grads, scale[t][:, None], out=out)
                out.addcmul_(parts, dot[:, None])
                # dL/dh_{t-1} = U^T dL/dz_t; addmm with beta 0, as mm would allocate, zero and copy
                torch.addmm(grad, ctx.matrix_t, grad_z[:, t - start], beta=0, out=grad)
            chunk = grad_z[:, :stop - start]  # (2N, t, B)
            rows = chunk.reshape(reals, -1)  # (2N, t B)
            grad_weight.addmm_(rows, x[start:stop].transpose(1, 2).reshape(rows.shape[1], -1))
            grad_input_bias += rows.sum(1)
            pattern.accumulate_products(products, chunk, z, scale, start)
            if grad_x is not None:
                grad_x[start:stop] = torch.matmul(weight.T, chunk.transpose(0, 1))
        grad_bias = grad_bias.sum(-1, keepdim=True)
        return grad_x, grad_weight, grad_input_bias, pattern.values_grad(products), grad_bias, None


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
        self.pattern = _Pattern(config.hidden, config.capacity)

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

    def forward_features(self, x: Tensor) -> Tensor:
        seq = self.sequence(x)  # (T, B, C)
        weight, bias = self.input.weight[self.pattern.from_features], self.input.bias[self.pattern.from_features]
        values, modrelu_bias = self.unitary(), self._scan_bias()
        if torch.is_grad_enabled():
            h = _EunnScan.apply(seq.transpose(1, 2), weight, bias, values, modrelu_bias, self.pattern)
        else:  # inference: project each step's input on the fly, so memory does not grow with T x B
            h = seq.new_zeros(self.num_features, seq.shape[1])
            z, scale = torch.empty_like(h), h.new_empty(*modrelu_bias.shape[:2], h.shape[1])
            rho, full_bias = torch.empty_like(scale), modrelu_bias.expand_as(scale).contiguous()
            eps2, one = h.new_tensor(EPS * EPS), h.new_tensor(1.0)
            matrix = self.pattern.matrices(values)[0]
            for step in seq:
                torch.addmm(bias[:, None], weight, step.T, out=z)
                _modrelu_step(h, z, rho, scale, full_bias, eps2, one, matrix)
        return h[self.pattern.to_features].T  # (B, 2N): the last state, in feature order

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))  # (B, num_classes) logits


def build(image_shape: tuple[int, int, int], num_classes: int, config: Config) -> EURNN:
    return EURNN(image_shape, num_classes, config)
