"""LSTM baseline on the pixel-sequence input (the recurrent counterpart of eurnn), read out from the last step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.sequence import PixelSequence, SequenceConfig
from pipeline.schema import PositiveInt


class Config(SequenceConfig):
    hidden: PositiveInt = 128  # LSTM state width
    layers: PositiveInt = 1  # stacked LSTM layers


class LSTM(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, config: Config) -> None:
        super().__init__()
        self.sequence = PixelSequence(image_shape, config)
        self.rnn = nn.LSTM(image_shape[0], config.hidden, num_layers=config.layers)
        self.head = nn.Linear(config.hidden, num_classes)
        self.num_features = config.hidden

    def forward_features(self, x: Tensor) -> Tensor:
        # On CPU, PyTorch's own LSTM kernels instead of oneDNN's: same numbers, and a forward+backward
        # step at T = 784, batch 100, hidden 128 takes ~5.0 s of CPU time instead of ~7.7 s (oneDNN's
        # backward over long sequences is the slow part). Backward follows the path chosen here.
        enabled = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            outputs, _ = self.rnn(self.sequence(x))  # (T, B, hidden)
        finally:
            torch.backends.mkldnn.enabled = enabled
        return outputs[-1]  # (B, hidden): the state after the last pixel

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))  # (B, num_classes) logits


def build(image_shape: tuple[int, int, int], num_classes: int, config: Config) -> LSTM:
    return LSTM(image_shape, num_classes, config)
