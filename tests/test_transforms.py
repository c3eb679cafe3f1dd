"""Rotation by affine_grid / grid_sample (identity, quarter turns, direction, fill, per-image angles), random
translation and flips, and each augmentation in the training loop."""

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
from pipeline.transforms import random_angles, random_flip, random_shift, rotate, translate


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


def test_random_shift_moves_each_image_within_bounds() -> None:
    images = torch.zeros(500, 12, 12, dtype=torch.uint8)
    images[:, 5, 6] = 255  # one bright pixel per image
    shifted = random_shift(images, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert torch.equal(shifted, random_shift(images, 2, torch.Generator().manual_seed(1)))  # seeded
    flat = shifted.flatten(1)
    assert (flat.sum(1) == 255).all()  # the pixel stays inside (shift 2 of a pixel 5 from the edge), moved whole
    rows, cols = flat.argmax(1) // 12, flat.argmax(1) % 12
    assert set((rows - 5).tolist()) == set((cols - 6).tolist()) == {-2, -1, 0, 1, 2}  # every offset, no other
    edge = torch.full((1, 4, 4), 9, dtype=torch.uint8)
    assert {random_shift(edge, 1, torch.Generator().manual_seed(k)).min().item() for k in range(20)} == {0, 9}


def test_random_flip_mirrors_about_half() -> None:
    images = torch.arange(2000 * 3, dtype=torch.float32).reshape(2000, 1, 3)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(-1)).all(-1).all(-1)
    assert ((flipped == images).all(-1).all(-1) | mirrored).all()
    assert 900 < mirrored.sum() < 1100


@pytest.mark.parametrize("augment", [{"augment_rotation": 30.0}, {"augment_shift": 2}, {"augment_flip": True}],
                         ids=["rotation", "shift", "flip"])
def test_augmentation_is_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic: ParsedDataset,
                                synthetic_split: dict[str, np.ndarray], augment: dict) -> None:
    """models.<m>.augment_*: same seed, same weights; on and off give different weights (one epoch: the
    batch order is drawn before any augmentation, so only the augmentation can make them differ)."""
    monkeypatch.chdir(tmp_path)

    def weights(augment: dict, name: str) -> dict[str, torch.Tensor]:
        config = TrainConfig(epochs=1, batch_size=32, optimizer="adam", lr=1e-3, **{"augment_flip": False, **augment})
        seed_everything(0)
        model = create_model("mlp", synthetic.image_shape, len(synthetic.classes), hidden=[16])
        train(model, synthetic.images, synthetic.labels, synthetic_split, config,
              norm=Normalization.fit(synthetic.images), device=torch.device("cpu"), seed=0, live_dir=tmp_path / name)
        return model.state_dict()

    first, again, plain = weights(augment, "a"), weights(augment, "b"), weights({}, "c")
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["features.1.weight"], plain["features.1.weight"])


def test_translate_moves_content_and_fills_zeros() -> None:
    """translate(dy, dx) moves the content down and right (negative: up, left) and brings in zeros."""
    images = torch.arange(1, 2 * 5 * 5 + 1, dtype=torch.uint8).reshape(2, 5, 5)
    moved = translate(images, 1, 2)
    assert torch.equal(moved[:, 1:, 2:], images[:, :-1, :-2])
    assert not moved[:, :1].any() and not moved[:, :, :2].any()
    assert torch.equal(translate(translate(images, -1, -1), 1, 1)[:, 1:, 1:], images[:, 1:, 1:])
    assert torch.equal(translate(images, 0, 0), images)
