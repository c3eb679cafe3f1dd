"""An exponential moving average of a model's weights, as timm's ModelEmaV3 keeps it.

The average is a copy of the model beside it, updated after every optimizer step:
average <- decay * average + (1 - decay) * weights, over the whole state_dict. Floating-point entries
are averaged, BatchNorm's running mean and variance included (timm's default; its `exclude_buffers`
would copy them instead), and integer ones (BatchNorm's batch counter) are copied. The decay is warmed
up as timm's `use_warmup` does (crowsonkb's schedule, gamma 1, power 3/4: 0.9 after 20 steps, 0.99
after 460, 0.999 after 10,000), so a short run is not dragged back towards its initial weights: a
fixed 0.999 over mnist-5k's ~600 mlp steps would leave 55% of the average on the initial weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

WARMUP_POWER = 0.75  # timm's advice for runs of fewer than ~100k steps (0.999 at 10k steps)


class WeightAverage:
    """The moving average of `model`'s weights with the given top `decay` per optimizer step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()  # validated and saved in place of the model's own weights
        self.module.requires_grad_(False)
        self.decay = decay

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (1-based): 0 (a copy) after the first, then
        1 - (1 + t)^-3/4 for t = step - 1, capped at `decay` (timm's get_decay with use_warmup)."""
        t = step - 1
        return 0.0 if t <= 0 else min(self.decay, 1 - (1 + t) ** -WARMUP_POWER)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards `model`'s weights after optimizer step `step`."""
        averaged, current = [], []
        for mine, theirs in zip(self.module.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs)
            else:
                mine.copy_(theirs)  # counters (BatchNorm's num_batches_tracked) are not averaged
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay_at(step))  # one kernel per tensor group
