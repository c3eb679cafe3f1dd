"""The weights' moving average (`ema`): timm's warmed-up decay, what is averaged and copied, and that the
averaged weights are the ones validation selects and the run keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.averaging import WeightAverage
from pipeline.config import TrainConfig
from pipeline.data.parsed import ParsedDataset
from pipeline.device import seed_everything
from pipeline.inference import Normalization, predict
from pipeline.models import create_model
from pipeline.training import Training

CPU = torch.device("cpu")
RESNET = {"width": 8, "blocks": 2, "pool_after": [1, 2], "dropout": 0.2, "hidden": 16}


def test_decay_warms_up_as_timm_does() -> None:
    """The first update copies; then 1 - (1 + t)^-3/4 (t = step - 1), capped at the decay asked for."""
    average = WeightAverage(nn.Linear(2, 2), decay=0.999)
    assert average.decay_at(1) == 0.0
    assert average.decay_at(21) == pytest.approx(1 - 21 ** -0.75)  # ~0.898
    assert average.decay_at(461) == pytest.approx(0.99, abs=2e-4)
    assert average.decay_at(10**6) == 0.999
    assert WeightAverage(nn.Linear(2, 2), decay=0.9).decay_at(10**3) == 0.9


def test_update_averages_floats_and_copies_counters() -> None:
    """Weights and BatchNorm's running statistics move by (1 - decay) towards the model's; the batch
    counter is copied; the model itself is left alone."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = WeightAverage(model, decay=0.5)
    before = {key: value.clone() for key, value in average.module.state_dict().items()}
    with torch.no_grad():
        for value in model.parameters():
            value.add_(1.0)
    model.train()
    model(torch.randn(8, 3))  # moves the running statistics and the counter
    current = {key: value.clone() for key, value in model.state_dict().items()}
    average.update(model, step=100)  # past the warm-up: decay 0.5
    for key, value in average.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.5 * before[key] + 0.5 * current[key], msg=key)
        else:
            assert torch.equal(value, current[key]), key
    assert all(torch.equal(value, current[key]) for key, value in model.state_dict().items())
    assert not any(value.requires_grad for value in average.module.parameters())


def run(config: TrainConfig, synthetic: ParsedDataset, split: dict[str, np.ndarray], live: Path) -> Training:
    seed_everything(0)
    model = create_model("resnet", synthetic.image_shape, 10, **config.arch)
    training = Training(model, synthetic.images, synthetic.labels, split, config,
                        norm=Normalization.fit(synthetic.images), device=CPU, seed=0)
    training.run(live)
    return training


def test_averaged_weights_are_validated_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 synthetic: ParsedDataset,
                                                 synthetic_split: dict[str, np.ndarray]) -> None:
    """With ema on, the run ends holding the best epoch's averaged weights: their validation loss is the
    one recorded for the best epoch, and they differ from the same run's weights without averaging (whose
    batch order and dropout draws are the same: averaging draws nothing)."""
    monkeypatch.chdir(tmp_path)
    plain = TrainConfig(steps=60, batch_size=16, optimizer="adam", lr=3e-3, augment_flip=False, arch=RESNET)
    averaged = run(plain.model_copy(update={"ema": 0.9}), synthetic, synthetic_split, tmp_path / "ema")
    reference = run(plain, synthetic, synthetic_split, tmp_path / "plain")
    val = synthetic_split["val"]
    norm = Normalization.fit(synthetic.images)
    logits = predict(averaged.state.model, torch.from_numpy(synthetic.images[val]), norm, batch_size=64)
    loss = F.cross_entropy(logits, torch.from_numpy(synthetic.labels[val])).item()
    assert loss == pytest.approx(averaged.result.best_val_loss, abs=1e-6)
    assert averaged.state.history != reference.state.history
    mine, theirs = averaged.state.model.state_dict(), reference.state.model.state_dict()
    assert not any(torch.equal(mine[key], theirs[key]) for key in mine if mine[key].is_floating_point())
