"""Rotation by affine_grid / grid_sample: identity, quarter turns, direction, fill, per-image angles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.data.parsed import ParsedDataset
from pipeline.device import seed_everything
from pipeline.inference import Normalization
from pipeline.models import create_model
from pipeline.training import train
from pipeline.transforms import random_angles, rotate


@pytest.fixture
def images() -> torch.Tensor:
    """(4, 1, 28, 28) random float images."""
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_zero_degrees_is_identity(images: torch.Tensor) -> None:
    torch.testing.assert_close(rotate(images, 0.0), images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("degrees, k", [(90, 1), (180, 2), (270, 3), (-90, 3), (360, 0)])
def test_quarter_turns_match_rot90(images: torch.Tensor, degrees: float, k: int) -> None:
    # Exact on a pixel grid: every output pixel centre lands on an input pixel centre.
    torch.testing.assert_close(rotate(images, degrees), torch.rot90(images, k, dims=(2, 3)), atol=1e-4, rtol=0)


def test_direction_is_counter_clockwise() -> None:
    image = torch.zeros(1, 1, 28, 28)
    image[..., 2:6, 20:24] = 1.0  # a blob near the top-right corner
    rows, cols = rotate(image, 90)[0, 0].nonzero().float().mean(0)
    assert rows < 14 and cols < 14, "a counter-clockwise quarter turn moves top-right to top-left"


def test_fill_and_mass() -> None:
    """45 degrees: corners come from outside (get `fill`), a centred disc keeps its mass."""
    side = 28
    y, x = torch.meshgrid(torch.arange(side) - 13.5, torch.arange(side) - 13.5, indexing="ij")
    disc = ((x**2 + y**2) < 8**2).float()[None, None]
    rotated = rotate(disc, 45)
    assert rotated.sum().item() == pytest.approx(disc.sum().item(), rel=0.02)
    assert rotate(torch.zeros(1, 1, side, side), 45, fill=-0.5)[0, 0, 0, 0].item() == pytest.approx(-0.5)
    assert rotate(torch.full((1, 1, side, side), -0.5), 45, fill=-0.5).allclose(torch.tensor(-0.5))


def test_per_image_angles(images: torch.Tensor) -> None:
    angles = torch.tensor([0.0, 90.0, 180.0, 30.0])
    rotated = rotate(images, angles)
    for i, degrees in enumerate(angles.tolist()):
        torch.testing.assert_close(rotated[i:i + 1], rotate(images[i:i + 1], degrees), atol=1e-5, rtol=0)


def test_non_square_half_turn() -> None:
    image = torch.rand(2, 3, 10, 16)
    torch.testing.assert_close(rotate(image, 180), torch.flip(image, dims=(2, 3)), atol=1e-4, rtol=0)


def test_random_angles_are_seeded_and_bounded() -> None:
    a = random_angles(1000, 30.0, torch.Generator().manual_seed(3))
    b = random_angles(1000, 30.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.abs().max() <= 30.0 and a.min() < -25 and a.max() > 25


def test_rotation_augmentation_is_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic: ParsedDataset,
                                         synthetic_split: dict[str, np.ndarray]) -> None:
    """models.<m>.augment_rotation: same seed, same weights; on and off give different weights (one epoch:
    the batch order is drawn before any angle, so only the rotation can make them differ)."""
    monkeypatch.chdir(tmp_path)

    def weights(augment: float, name: str) -> dict[str, torch.Tensor]:
        config = TrainConfig(epochs=1, batch_size=32, optimizer="adam", lr=1e-3, augment_rotation=augment)
        seed_everything(0)
        model = create_model("mlp", synthetic.image_shape, len(synthetic.classes), hidden=[16])
        train(model, synthetic.images, synthetic.labels, synthetic_split, config,
              norm=Normalization.fit(synthetic.images), device=torch.device("cpu"), seed=0, live_dir=tmp_path / name)
        return model.state_dict()

    first, again, plain = weights(30.0, "a"), weights(30.0, "b"), weights(0.0, "c")
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["features.1.weight"], plain["features.1.weight"])
