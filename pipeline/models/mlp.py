"""Multi-layer perceptron (the MLP notebook: 784 -> hidden -> 10, ReLU in between)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from pipeline.schema import FractionOrZero, PositiveInt, Section


class Config(Section):
    hidden: list[PositiveInt] = [256]  # width of each hidden layer (the MLP notebook: [30])
    dropout: FractionOrZero = 0.0  # dropout after each hidden layer


class MLP(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, config: Config) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(image_shape)
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        self.num_features = width

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, hidden[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))  # (B, num_classes) logits


def build(image_shape: tuple[int, int, int], num_classes: int, config: Config) -> MLP:
    return MLP(image_shape, num_classes, config)
