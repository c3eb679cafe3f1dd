"""Image transforms on batches already on the device: rotation by affine_grid / grid_sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rotate(images: Tensor, degrees: float | Tensor, fill: float = 0.0) -> Tensor:
    """Rotate float images (B, C, H, W) counter-clockwise about their centre, bilinearly.

    `degrees` is one angle for the batch or one per image (B,). Pixels that come from outside the
    image get `fill` (the background: 0 for raw MNIST pixels, -mean/std once normalised).
    """
    batch, _, height, width = images.shape
    radians = torch.as_tensor(degrees, dtype=images.dtype, device=images.device).deg2rad().expand(batch)
    cos, sin = radians.cos(), radians.sin()
    zero = torch.zeros_like(cos)
    # theta maps each output pixel to the input point it samples, in coordinates normalised to
    # [-1, 1] per axis; the H/W and W/H factors keep the rotation rigid on non-square images.
    theta = torch.stack([
        torch.stack([cos, -sin * height / width, zero], 1),
        torch.stack([sin * width / height, cos, zero], 1),
    ], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    # grid_sample pads with zeros: shift by `fill` so the padding lands on the background value.
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def random_angles(count: int, max_degrees: float, generator: torch.Generator) -> Tensor:
    """`count` angles uniform in [-max_degrees, max_degrees], drawn on the CPU from `generator`."""
    return (torch.rand(count, generator=generator) * 2 - 1) * max_degrees


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image (B, H, W) by its own random (dy, dx), each in [-max_shift, max_shift] pixels.

    The image is padded with zeros (the raw background) and a window of the original size cut from it;
    offsets are drawn on the CPU from `generator` (one pair per image) and applied by one gather."""
    batch, height, width = images.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch, 1), generator=generator).to(images.device)
    padded = F.pad(images, (max_shift,) * 4)  # (B, H + 2s, W + 2s)
    rows = offsets[0] + torch.arange(height, device=images.device)  # (B, H): source rows in the padded image
    cols = offsets[1] + torch.arange(width, device=images.device)  # (B, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W)


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image (B, H, W) left-right with probability 1/2 (right for clothing, wrong for digits)."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None], images.flip(-1), images)


def translate(images: Tensor, dy: int, dx: int) -> Tensor:
    """Move every image (B, H, W) down by `dy` and right by `dx` pixels (negative: up, left), zero fill:
    the raw background, as random_shift fills."""
    pad = max(abs(dy), abs(dx))
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad,) * 4)  # (B, H + 2p, W + 2p)
    return padded[..., pad - dy:pad - dy + height, pad - dx:pad - dx + width]
