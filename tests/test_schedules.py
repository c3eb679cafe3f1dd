"""A run's length and its lr over it: the budget is epochs or steps, and each schedule's lr curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig, validate
from pipeline.runtime import UserError
from pipeline.training import SCHEDULES


def test_exactly_one_of_epochs_and_steps() -> None:
    with pytest.raises(UserError, match="set exactly one of epochs and steps"):
        validate(TrainConfig, {"epochs": 2, "steps": 10, "batch_size": 8, "optimizer": "adam", "lr": 0.1})


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_schedules(schedule: str) -> None:
    config = TrainConfig(steps=100, batch_size=8, optimizer="sgd", lr=0.1, schedule=schedule)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    scheduler = SCHEDULES[schedule](optimizer, config, 100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    if schedule == "constant":
        assert set(lrs) == {0.1}
    elif schedule == "cosine":
        assert lrs[0] == 0.1 and lrs[-1] < 1e-3 and lrs == sorted(lrs, reverse=True)
    else:
        assert max(lrs) == pytest.approx(0.1) and lrs[0] < 0.01 and lrs[-1] < 1e-4
        assert 20 <= int(np.argmax(lrs)) <= 40  # warm-up over the first 30% of the steps
