"""Every registered model: shapes, gradients, seeded init; every model x every precision trains through a
last batch of one image and validates; the registry's errors and checkpoints; what the registry-wide
tests cannot see of the image models (mlp, lenet, resnet)."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TrainConfig
from pipeline.device import for_device
from pipeline.inference import Normalization
from pipeline.models import MODELS, create_model
from pipeline.models.checkpoint import load_model, save_model
from pipeline.runtime import UserError
from pipeline.training import Training, batch_bounds

IMAGE_SHAPE = (1, 28, 28)
BATCH = 5
SMALL_ARCH = {  # small but non-default hyperparameters for each model
    "mlp": {"hidden": [24], "dropout": 0.3},
    "lenet": {"hidden": [24], "dropout": 0.3},
    "resnet": {"width": 8, "blocks": 2, "pool_after": [1, 2], "hidden": 16},
    "eurnn": {"hidden": 8, "capacity": 3, "permutation_seed": 1},
    "lstm": {"hidden": 12, "layers": 2, "permute": False},
}


def seeded_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, IMAGE_SHAPE, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_contract(name: str) -> None:
    """Logits (B, 10), finite gradients for every parameter, features (B, num_features), seeded init."""
    model = seeded_model(name)
    x = torch.randn(BATCH, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(BATCH) % 10
    logits = model(x)
    assert logits.shape == (BATCH, 10) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, targets).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
    assert any(param.grad.abs().sum() > 0 for param in model.parameters())
    features = model.forward_features(x)
    assert features.shape == (BATCH, model.num_features)

    twin, other = seeded_model(name), seeded_model(name, seed=1)
    # Parameters, not state_dict: the forward passes above moved batch norm's running statistics.
    for (key, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), key
    assert not all(torch.equal(a, c) for a, c in zip(model.parameters(), other.parameters()))
    # Determinism: the same seeds give the same gradients (dropout included).
    torch.manual_seed(2)
    twin(x).logsumexp(1).sum().backward()
    torch.manual_seed(2)
    model.zero_grad()
    model(x).logsumexp(1).sum().backward()
    for (key, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a.grad, b.grad), key


PRECISIONS = typing.get_args(TrainConfig.model_fields["precision"].annotation)  # every value params.yaml accepts
SMALL_IMAGE = (1, 16, 16)  # eurnn reads 256 pixels one by one, not 784


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_and_precision_trains_through_a_last_batch_of_one(tmp_path: Path, name: str,
                                                                      precision: str) -> None:
    """9 training rows in batches of 4 leave a last batch of one image (what killed resnet's BatchNorm1d
    after a whole epoch); each model in each precision the schema accepts trains that epoch and validates,
    or is refused in one line (tf32 off CUDA)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(14, *SMALL_IMAGE[1:]), dtype=np.uint8)
    labels = np.arange(14) % 10
    split = {"train": np.arange(9), "val": np.arange(9, 14)}
    config = TrainConfig(epochs=1, batch_size=4, optimizer="adam", lr=1e-3, precision=precision,
                         augment_flip=False, arch=SMALL_ARCH[name])
    device = torch.device("cpu")
    try:
        config = for_device(config, device)
    except UserError as err:
        assert precision == "tf32" and "CUDA" in str(err)
        return
    torch.manual_seed(0)
    training = Training(create_model(name, SMALL_IMAGE, 10, **config.arch), images, labels, split, config,
                        norm=Normalization.fit(images[split["train"]]), device=device, seed=0)
    result = training.run(tmp_path / "live")
    assert training.state.step == 2  # batches of 4 and 5: the lone last image joined the one before
    assert result.best_epoch == 1 and np.isfinite(result.best_val_loss)
    assert all(np.isfinite(value) for value in training.state.history[0].values())


@pytest.mark.parametrize(("rows", "batch_size", "bounds"), [
    (9, 4, [(0, 4), (4, 9)]), (8, 4, [(0, 4), (4, 8)]), (10, 4, [(0, 4), (4, 8), (8, 10)]),
    (1, 4, [(0, 1)]), (5, 4, [(0, 5)]), (3, 1, [(0, 1), (1, 2), (2, 3)]),
])
def test_batch_bounds(rows: int, batch_size: int, bounds: list[tuple[int, int]]) -> None:
    assert batch_bounds(rows, batch_size) == bounds


def test_batch_norm_refuses_batches_of_one() -> None:
    images, labels = np.zeros((6, 16, 16), np.uint8), np.arange(6) % 10
    config = TrainConfig(epochs=1, batch_size=1, optimizer="adam", lr=1e-3, augment_flip=False,
                         arch=SMALL_ARCH["resnet"])
    with pytest.raises(UserError, match="batch_size 1: the model's batch norm needs at least 2 images a batch"):
        Training(create_model("resnet", SMALL_IMAGE, 10, **config.arch), images, labels,
                 {"train": np.arange(4), "val": np.arange(4, 6)}, config, norm=Normalization(0.0, 1.0),
                 device=torch.device("cpu"), seed=0)


def test_model_list_is_complete() -> None:
    assert set(MODELS) == set(SMALL_ARCH)


def test_unknown_model() -> None:
    with pytest.raises(UserError) as info:
        create_model("nope", IMAGE_SHAPE, 10)
    assert "'nope'" in str(info.value)
    for name in MODELS:
        assert name in str(info.value)


def test_lenet_too_deep_for_image() -> None:
    with pytest.raises(UserError, match=r"models\.lenet\.arch\.channels: 3 conv blocks .* 28x28"):
        create_model("lenet", IMAGE_SHAPE, 10, channels=[4, 8, 16])


def test_resnet_shape_and_head_init() -> None:
    torch.manual_seed(0)
    model = create_model("resnet", (1, 28, 28), 10)
    assert isinstance(model.conv[0].shortcut, torch.nn.Conv2d)  # 1 -> 64 channels: a 1x1 projection
    assert model.fc[0].in_features == 64 * 7 * 7  # two 2x2 pools: 28 -> 7
    assert model.head.weight.abs().max() < 1e-3  # scaled by 0.001: near-uniform first predictions
    with torch.no_grad():
        loss = F.cross_entropy(model.eval()(torch.randn(8, 1, 28, 28)), torch.arange(8))
    assert loss.item() == pytest.approx(np.log(10), abs=1e-2)


def test_resnet_pools_must_fit() -> None:
    with pytest.raises(UserError, match=r"models\.resnet\.arch\.pool_after: block 7 does not exist"):
        create_model("resnet", (1, 28, 28), 10, pool_after=[7])
    with pytest.raises(UserError, match=r"pool_after: 3 pools do not fit a 4x4 image"):
        create_model("resnet", (1, 4, 4), 10, blocks=3, pool_after=[1, 2, 3])


def test_arch_is_applied() -> None:
    mlp = create_model("mlp", IMAGE_SHAPE, 7, hidden=[40, 20])
    assert mlp.num_features == 20 and mlp(torch.zeros(2, *IMAGE_SHAPE)).shape == (2, 7)
    lenet = create_model("lenet", (1, 16, 16), 3, channels=[4], hidden=[12])
    assert lenet.num_features == 12 and lenet(torch.zeros(2, 1, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_round_trip(tmp_path: Path, name: str) -> None:
    arch = SMALL_ARCH[name]
    torch.manual_seed(0)
    model = create_model(name, IMAGE_SHAPE, 10, **arch).eval()
    meta = {"model": name, "arch": arch, "classes": [str(k) for k in range(10)], "image_shape": list(IMAGE_SHAPE),
            "normalization": {"mean": 33.3, "std": 78.5}}
    save_model(tmp_path / "model.pt", model, meta)
    loaded, loaded_meta = load_model(tmp_path / "model.pt", torch.device("cpu"))
    assert loaded_meta == meta
    assert not loaded.training
    x = torch.randn(4, *IMAGE_SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    # Same weights, same bytes, whatever the file is called: DVC's hashes stay put across reruns.
    save_model(tmp_path / "again.pt", model, meta)
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()


class Gadget:
    """Not a tensor or plain type: only an unrestricted (unsafe) unpickler can rebuild it."""


def test_load_refuses_pickled_code(tmp_path: Path) -> None:
    """load_model reads with weights_only=True: a checkpoint carrying arbitrary objects is refused."""
    model = create_model("mlp", IMAGE_SHAPE, 10)
    meta = {"model": "mlp", "arch": {}, "classes": [str(k) for k in range(10)], "image_shape": list(IMAGE_SHAPE),
            "extra": Gadget()}
    torch.save({"meta": meta, "state_dict": model.state_dict()}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="model.pt: unreadable.*UnpicklingError: Weights only load failed"):
        load_model(tmp_path / "model.pt", torch.device("cpu"))
