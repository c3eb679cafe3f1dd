"""Input normalisation and batched inference, shared by training (validation) and evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Normalization:
    """Per-dataset pixel statistics of the train split, in raw pixel units (0..255)."""

    mean: float
    std: float

    @classmethod
    def fit(cls, images: np.ndarray) -> Normalization:
        pixels = images.astype(np.float64)
        return cls(mean=float(pixels.mean()), std=float(pixels.std()) or 1.0)

    def apply(self, images: Tensor) -> Tensor:
        """uint8 (B, H, W) -> float32 (B, 1, H, W), zero mean and unit variance over the train split."""
        return ((images.float() - self.mean) / self.std).unsqueeze(1)

    @property
    def background(self) -> float:
        """What a black (0) pixel becomes: the fill for pixels a rotation brings in from outside."""
        return -self.mean / self.std

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.inference_mode()
def predict(model: nn.Module, images: Tensor, norm: Normalization, batch_size: int) -> Tensor:
    """Logits (N, classes) for uint8 images (N, H, W), one batch of activations alive at a time.

    Leaves the model in eval mode; the caller switches back to train mode when it needs to.
    """
    model.eval()
    batches = [model(norm.apply(images[start:start + batch_size])).float()
               for start in range(0, len(images), batch_size)]
    return torch.cat(batches) if batches else torch.zeros(0)
