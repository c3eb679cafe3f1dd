"""Pixel-sequence input shared by the recurrent models (eurnn, lstm; the EURNN notebook).

An image (B, C, H, W) is read pixel by pixel: a sequence of T = H * W steps of C values each,
optionally in a fixed random pixel order ("permuted MNIST"). The order has its own seed, so it is a
property of the model, not of the dataset or of the training seed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.schema import Section, Seed


class SequenceConfig(Section):
    """The `arch:` keys every pixel-sequence model shares."""

    permute: bool = True  # read the pixels in a fixed random order (the EURNN notebook) instead of row by row
    permutation_seed: Seed = 0  # seed of that order; the EURNN notebook used np.random.RandomState(0)


def pixel_permutation(num_pixels: int, seed: int) -> np.ndarray:
    """The EURNN notebook's order: np.random.RandomState(seed).shuffle(range(num_pixels)); step t reads perm[t]."""
    return np.random.RandomState(seed).permutation(num_pixels)


class PixelSequence(nn.Module):
    """(B, C, H, W) images -> (T, B, C) time-major sequence, T = H * W, optionally permuted."""

    def __init__(self, image_shape: tuple[int, int, int], config: SequenceConfig) -> None:
        super().__init__()
        num_pixels = image_shape[1] * image_shape[2]
        order = pixel_permutation(num_pixels, config.permutation_seed) if config.permute else np.arange(num_pixels)
        # Not persistent: it follows from the config, which the saved weights carry anyway.
        self.register_buffer("order", torch.from_numpy(order), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        pixels = x.flatten(2)[:, :, self.order]  # (B, C, T)
        return pixels.permute(2, 0, 1)  # (T, B, C)
