"""LeNet-5 (the LeNet notebook's): conv 6@5x5, pool, conv 16@5x5, pool, then 120 and 84 wide dense layers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.runtime import UserError
from pipeline.schema import FractionOrZero, PositiveInt, Section

KERNEL = 5


class Config(Section):
    channels: list[PositiveInt] = [6, 16]  # output channels of each conv block
    hidden: list[PositiveInt] = [120, 84]  # widths of the dense layers
    dropout: FractionOrZero = 0.0  # dropout before each dense layer


class LeNet(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, config: Config) -> None:
        super().__init__()
        in_channels, height, width = image_shape
        blocks: list[nn.Module] = []
        for out_channels in config.channels:
            # conv (no padding) shrinks each side by KERNEL - 1, the 2x2 max-pool halves it
            height, width = (height - KERNEL + 1) // 2, (width - KERNEL + 1) // 2
            if min(height, width) < 1:
                raise UserError(
                    f"models.lenet.arch.channels: {len(config.channels)} conv blocks do not fit "
                    f"a {image_shape[1]}x{image_shape[2]} image; use fewer"
                )
            blocks += [nn.Conv2d(in_channels, out_channels, KERNEL), nn.MaxPool2d(2), nn.ReLU(inplace=True)]
            in_channels = out_channels
        dense: list[nn.Module] = [nn.Flatten()]
        features = in_channels * height * width  # 16 * 4 * 4 = 256 for 28x28 inputs
        for hidden in config.hidden:
            dense += [nn.Dropout(config.dropout), nn.Linear(features, hidden), nn.ReLU(inplace=True)]
            features = hidden
        self.conv = nn.Sequential(*blocks)
        self.dense = nn.Sequential(*dense)
        self.head = nn.Linear(features, num_classes)
        self.num_features = features
        # Channels-last (NHWC) weights make the convolutions write NHWC, which oneDNN's kernels and ATen's
        # max-pool handle faster on CPU for these few channels (bench/throughput.py); load_state_dict keeps it.
        self.to(memory_format=torch.channels_last)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.dense(self.conv(x))  # (B, C, H, W) -> (B, hidden[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))  # (B, num_classes) logits


def build(image_shape: tuple[int, int, int], num_classes: int, config: Config) -> LeNet:
    return LeNet(image_shape, num_classes, config)
