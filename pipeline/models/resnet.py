"""Small ResNet (the ResNet notebook's): six residual blocks at one width, two 2x2 max-pools, a 256-wide head.

The ResNet notebook's first block adds its 1-channel input to a 64-channel output by broadcasting; here a block
whose input and output widths differ carries its identity through a 1x1 convolution (a projection),
which is the standard ResNet shortcut and works for any number of input channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.runtime import UserError
from pipeline.schema import FractionOrZero, PositiveFloat, PositiveInt, Section


class Config(Section):
    width: PositiveInt = 64  # channels of every residual block
    blocks: PositiveInt = 6  # residual blocks
    pool_after: list[PositiveInt] = [2, 4]  # 2x2 max-pool + dropout after these blocks (1-based)
    dropout: FractionOrZero = 0.5  # after each pool
    hidden: PositiveInt = 256  # width of the fully connected layer
    head_init_scale: PositiveFloat = 1e-3  # the last layer's initial weights are scaled by this


class ResBlock(nn.Module):
    """conv3x3, batch norm, ReLU, conv3x3, plus the identity (projected by a 1x1 conv if widths differ)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.body(x)  # (B, out_channels, H, W)


class ResNet(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, config: Config) -> None:
        super().__init__()
        in_channels, height, width = image_shape
        bad = [k for k in config.pool_after if k > config.blocks]
        if bad:
            raise UserError(f"models.resnet.arch.pool_after: block {bad[0]} does not exist; blocks are 1..{config.blocks}")
        layers: list[nn.Module] = []
        for block in range(1, config.blocks + 1):
            layers.append(ResBlock(in_channels, config.width))
            in_channels = config.width
            if block in config.pool_after:
                layers += [nn.MaxPool2d(2), nn.Dropout(config.dropout)]
                height, width = height // 2, width // 2
                if min(height, width) < 1:
                    raise UserError(f"models.resnet.arch.pool_after: {len(config.pool_after)} pools do not fit "
                                    f"a {image_shape[1]}x{image_shape[2]} image; use fewer")
        layers += [nn.BatchNorm2d(config.width), nn.ReLU(inplace=True), nn.Flatten()]
        self.conv = nn.Sequential(*layers)
        # width * (H/4) * (W/4) = 64 * 7 * 7 = 3136 for 28x28 inputs
        self.fc = nn.Sequential(nn.Linear(config.width * height * width, config.hidden),
                                nn.BatchNorm1d(config.hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(config.hidden, num_classes)
        with torch.no_grad():  # as the ResNet notebook: near-zero initial logits, the first loss about log(classes)
            self.head.weight.mul_(config.head_init_scale)
            self.head.bias.mul_(config.head_init_scale)
        self.num_features = config.hidden

    def forward_features(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))  # (B, C, H, W) -> (B, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))  # (B, num_classes) logits


def build(image_shape: tuple[int, int, int], num_classes: int, config: Config) -> ResNet:
    return ResNet(image_shape, num_classes, config)
