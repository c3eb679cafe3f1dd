"""The EURNN recurrence as one autograd Function with a hand-written backward: the fast kernel behind
pipeline/models/eurnn.py, tested against that module's plain step loop (EURNN.reference_features).

    z_t = W x_t + c + U h_{t-1},    h_t = modReLU(z_t),    t = 1..T, h_0 = 0

U depends on the parameters, not on the step, and each rotation layer moves a unit's value at most one
unit along, so U is banded: unit j depends on at most 2 * capacity units within capacity of j. Written
over the 2N reals of the state, U is a sparse real matrix with 4 * capacity nonzeros per row; the model
builds those nonzeros once per forward pass with ordinary autograd (a small graph). The T-step
recurrence here runs over plain real tensors. A step is 9 ops forward (one CSR sparse-dense product that
adds U h to the precomputed input projection, 8 elementwise for modReLU) and 10 backward (9 elementwise
for modReLU's derivative, one CSR product for U^T g); no Python loop over layers or units. The gradients
of U's nonzeros and of the input projection are batched matmuls every CHUNK steps
(`ScanPattern.accumulate_products`: each block of BLOCK units times the window of units it reaches). On
CPU the steps are bound by per-op overhead (~5-20 us per op on (2N, B) = (512, 100) tensors) and by first
touches of the stored (T, ., B) tensors. `python -m bench.eurnn` times it against the PyPI package torch_eunn that
the EURNN notebook used.

Inside the scan the 2N reals are ordered by block of BLOCK units, then real/imaginary part, then unit:
the state (2N, B) viewed as (blocks, 2, BLOCK, B). The model's input projection and features keep the
order (even/odd unit, pair, real/imaginary) of its parameters and of saved weights.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

EPS = 1e-5  # modReLU uses |z| = sqrt(|z|^2 + EPS^2): smooth at z = 0
BLOCK = 16  # units per block of the weight-gradient products (bigger: fewer, larger matmuls, more waste)
CHUNK = 64  # time steps per weight-gradient product: bounds its temporary memory to CHUNK x B x 2.5N


class ScanPattern(nn.Module):
    """Where U's nonzeros are, in the scan's order of the 2N reals, and index tables built from that.

    reach (2N, 2N) bool: which real entries of U can be nonzero, in natural order (part * N + unit); every
    entry lies within `capacity` units of the diagonal, wrapping around. Buffers only (not saved: they
    follow from hidden and capacity), so they move with the model."""

    def __init__(self, hidden: int, capacity: int, reach: Tensor) -> None:
        super().__init__()
        self.block = max(size for size in range(1, min(BLOCK, hidden) + 1) if hidden % size == 0)
        self.window = self.block + 2 * capacity  # units a block's rows can reach: capacity either side
        blocks = hidden // self.block
        # The scan's real r = (block, part, unit in block) <-> natural real part * N + unit.
        unit = torch.arange(hidden).view(blocks, 1, self.block)
        part = torch.arange(2).view(1, 2, 1)
        natural = (part * hidden + unit).flatten()  # scan order -> natural order
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


class EunnScan(torch.autograd.Function):
    """z_t = W x_t + c + U h_{t-1}, h_t = modReLU(z_t) for t = 1..T from h_0 = 0; returns h_T (2N, B).

    x (T, C, B) inputs; weight (2N, C), input_bias (2N,) the input projection and the result in scan
    order; values (nnz,) U's nonzeros; bias (blocks, BLOCK, 1) modReLU's. Backward by hand (BPTT):
    per step only what the recursion needs; the weight gradients every CHUNK steps, batched.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx: Any, x: Tensor, weight: Tensor, input_bias: Tensor, values: Tensor, bias: Tensor,
                pattern: ScanPattern) -> Tensor:
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


def scan_inference(seq: Tensor, weight: Tensor, input_bias: Tensor, values: Tensor, bias: Tensor,
                   pattern: ScanPattern) -> Tensor:
    """What EunnScan.forward returns, h_T (2N, B), without autograd: each step's input is projected on the fly,
    so memory does not grow with T x B. seq (T, B, C); the other arguments as EunnScan's."""
    h = seq.new_zeros(len(weight), seq.shape[1])
    z, scale = torch.empty_like(h), h.new_empty(*bias.shape[:2], h.shape[1])
    rho, full_bias = torch.empty_like(scale), bias.expand_as(scale).contiguous()
    eps2, one = h.new_tensor(EPS * EPS), h.new_tensor(1.0)
    matrix = pattern.matrices(values)[0]
    for step in seq:
        torch.addmm(input_bias[:, None], weight, step.T, out=z)
        _modrelu_step(h, z, rho, scale, full_bias, eps2, one, matrix)
    return h
