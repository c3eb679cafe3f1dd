"""params.yaml validation: every mistake is one UserError line naming the key and what is valid."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Params, load_params
from pipeline.models import create_model
from pipeline.runtime import UserError

WriteParams = Callable[[dict[str, Any]], Path]
DELETE = object()


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set (or with DELETE remove) data[a][b][c] for dotted 'a.b.c'."""
    *parents, last = dotted.split(".")
    for part in parents:
        data = data[part]
    if value is DELETE:
        del data[last]
    else:
        data[last] = value


def error_of(path: Path) -> str:
    """The UserError message load_params gives for `path`; fails if it loads or spans several lines."""
    with pytest.raises(UserError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    return message


def test_repo_params_load(committed_params: Path, repo_params_dict: dict[str, Any]) -> None:
    """The committed file loads, and carries its values through (whatever they are tuned to)."""
    params = load_params(committed_params)
    assert isinstance(params, Params)
    assert params.run.datasets == repo_params_dict["run"]["datasets"]
    assert set(params.run.models) <= set(params.models)
    assert params.models["lenet"].lr == pytest.approx(repo_params_dict["models"]["lenet"]["lr"])
    assert params.models["mlp"].arch["hidden"] == repo_params_dict["models"]["mlp"]["arch"]["hidden"]


INVALID = [  # (dotted key, value or DELETE, fragments the message must contain)
    ("models.mlp.lrr", 0.1, ["models.mlp.lrr: unknown key", "valid keys", "epochs", "lr,", "arch"]),
    ("sed", 1, ["params.yaml: sed: unknown key", "seed", "device", "split"]),
    ("split.val_fractoin", 0.1, ["split.val_fractoin: unknown key", "val_fraction", "test_fraction"]),
    ("models.mlp.epochs", "ten", ["models.mlp.epochs", "integer", "'ten'"]),
    ("models.mlp.epochs", 2.5, ["models.mlp.epochs", "integer", "2.5"]),
    ("models.mlp.nesterov", "yes", ["models.mlp.nesterov", "bool", "'yes'"]),
    ("models.mlp.lr", 0, ["models.mlp.lr", "greater than 0"]),
    ("models.lenet.lr", -1.0e-3, ["models.lenet.lr", "greater than 0"]),
    ("split.val_fraction", 0, ["split.val_fraction", "greater than 0"]),
    ("split.val_fraction", 1.5, ["split.val_fraction", "less than 1"]),
    ("split.test_fraction", 1.0, ["split.test_fraction", "less than 1"]),
    ("models.mlp.momentum", 1.0, ["models.mlp.momentum", "less than 1"]),
    ("plot.grid_size", 0, ["plot.grid_size", "greater than 0"]),
    ("models.lenet.momentum", 0.9, ["models.lenet", "momentum applies to sgd and rmsprop only"]),
    ("seed", DELETE, ["seed", "missing required key"]),
    ("models.mlp.epochs", DELETE, ["models.mlp: set exactly one of epochs and steps"]),
    ("evaluate", DELETE, ["evaluate", "missing required key"]),
    ("device", "tpu", ["device", "'auto', 'cpu', 'cuda' or 'mps'", "'tpu'"]),
    ("models.resnet.precision", "fp16", ["models.resnet.precision", "'auto', 'fp32', 'tf32' or 'bf16'", "'fp16'"]),
    ("evaluate.embedding_points", 1, ["evaluate.embedding_points", "greater than or equal to 2"]),  # PCA needs 2
    ("models.mlp.bf16", True, ["models.mlp.bf16", "unknown key", "precision"]),
    ("models.mlp.ema", 1.0, ["models.mlp.ema", "less than 1"]),
    ("models.lenet.augment_flip", "yes", ["models.lenet.augment_flip: must be True, False or 'auto'", "'yes'"]),
    ("evaluate.tta", "mirror", ["evaluate.tta", "'none', 'flip', 'shifts' or 'both'", "'mirror'"]),
    ("models.lenet.per_dataset", {"fashion": {"epochs": 2}},
     ["models.lenet.per_dataset: unknown dataset 'fashion'; valid: mnist-5k,", "fashion-mnist"]),
    ("models.lenet.per_dataset", {"fashion-mnist": {"lr": -1}},
     ["models.lenet.per_dataset.fashion-mnist.lr: must be greater than 0 (got -1)"]),
    ("models.lenet.per_dataset", {"fashion-mnist": {"lrr": 1}},
     ["models.lenet.per_dataset.fashion-mnist.lrr: unknown key", "valid keys", "epochs"]),
    ("models.lenet.per_dataset", {"fashion-mnist": {"steps": 10, "epochs": 2}},
     ["models.lenet.per_dataset.fashion-mnist: set exactly one of epochs and steps"]),
    ("models.lenet.per_dataset", {"fashion-mnist": {"per_dataset": {}}},
     ["models.lenet.per_dataset.fashion-mnist.per_dataset: per_dataset does not nest"]),
    ("models.lenet.per_dataset", {"fashion-mnist": {"arch": [1]}},
     ["models.lenet.per_dataset.fashion-mnist.arch: must be a mapping"]),
    ("models.lenet.per_dataset", {"fashion-mnist": 3}, ["models.lenet.per_dataset.fashion-mnist", "dictionary"]),
]


@pytest.mark.parametrize(("key", "value", "expected"), INVALID,
                         ids=[f"{key}-deleted" if value is DELETE else f"{key}={value!r}" for key, value, _ in INVALID])
def test_invalid_value_names_key(params: dict[str, Any], write_params: WriteParams, key: str, value: Any,
                                 expected: list[str]) -> None:
    set_key(params, key, value)
    message = error_of(write_params(params))
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(("key", "value", "name", "valid"), [
    ("run.models", ["mlp", "nope"], "'nope'", "mlp, lenet, resnet, eurnn, lstm"),
    ("run.datasets", ["mnist-5k", "nope"], "'nope'", "mnist-5k"),
], ids=["run.models", "run.datasets"])
def test_unknown_name_in_run(params: dict[str, Any], write_params: WriteParams, key: str, value: list[str],
                             name: str, valid: str) -> None:
    set_key(params, key, value)
    message = error_of(write_params(params))
    assert f"{key}: unknown name {name}; valid: {valid}" in message, message


def test_unknown_model_section(params: dict[str, Any], write_params: WriteParams) -> None:
    params["models"]["nope"] = dict(params["models"]["mlp"])
    message = error_of(write_params(params))
    assert "models: unknown name 'nope'; valid: mlp, lenet, resnet, eurnn, lstm" in message, message


def test_run_model_without_section(params: dict[str, Any], write_params: WriteParams) -> None:
    del params["models"]["lenet"]
    message = error_of(write_params(params))
    assert "run.models" in message and "'lenet'" in message and "no section" in message


def test_model_left_out_of_run_keeps_section(params: dict[str, Any], write_params: WriteParams) -> None:
    params["run"]["models"] = ["mlp"]
    assert set(load_params(write_params(params)).models) == {"mlp", "lenet", "resnet", "eurnn", "lstm"}


def test_yaml_12_exponent_is_float(params: dict[str, Any], write_params: WriteParams) -> None:
    """`1e-3` (no dot) is a float in YAML 1.2, as DVC reads it; YAML 1.1 would make it a string."""
    params["models"]["lenet"]["lr"] = "LENET_LR"  # a placeholder, replaced in the text by a dotless exponent
    path = write_params(params)
    text = path.read_text()
    assert text.count("lr: LENET_LR\n") == 1
    path.write_text(text.replace("lr: LENET_LR\n", "lr: 3e-3\n"))
    lr = load_params(path).models["lenet"].lr
    assert isinstance(lr, float) and lr == 3e-3


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "absent.yaml")
    assert "absent.yaml" in message and "not found" in message


def test_broken_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nrun: [mlp\n  lenet:\n")
    message = error_of(path)
    assert "not valid YAML" in message


def test_arch_unknown_key() -> None:
    with pytest.raises(UserError) as info:
        create_model("mlp", (1, 28, 28), 10, hiden=[32])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("models.mlp.arch.hiden: unknown key") and "hidden" in message, message


def test_arch_bad_value() -> None:
    with pytest.raises(UserError, match=r"models\.lenet\.arch\.dropout: .*less than 1"):
        create_model("lenet", (1, 28, 28), 10, dropout=1.0)


def test_augment_flip_auto_follows_the_dataset(caplog: pytest.LogCaptureFixture) -> None:
    """auto flips where the dataset keeps labels under a flip (clothing), not elsewhere (digits); an explicit
    flip or shift the dataset does not keep trains as asked, with a warning naming it."""
    from pipeline.config import TrainConfig
    from pipeline.data.registry import DATASETS

    config = TrainConfig(epochs=1, batch_size=8, optimizer="adam", lr=1e-3)
    assert config.augment_flip == "auto"
    assert config.for_dataset(DATASETS["fashion-mnist"].keeps_label).augment_flip is True
    assert config.for_dataset(DATASETS["mnist-5k"].keeps_label).augment_flip is False
    with caplog.at_level(logging.WARNING):
        asked = config.model_copy(update={"augment_flip": True, "augment_shift": 1}).for_dataset(("shift",), "digits")
    assert asked.augment_flip is True and "augment_flip is on, but digits does not state" in caplog.text
    assert "augment_shift" not in caplog.text
    with caplog.at_level(logging.WARNING):
        config.model_copy(update={"augment_shift": 2}).for_dataset((), "mine")
    assert "augment_shift is on, but mine does not state that a shift keeps its labels (it keeps: none)" in caplog.text


def test_per_dataset_settings_apply_on_their_dataset_only(params: dict[str, Any], write_params: WriteParams) -> None:
    """A section's per_dataset entry overrides its settings on that dataset (arch key by key), nowhere else;
    a user folder may have one too."""
    params["image_folders"] = {"mine": "/data/mine"}
    params["models"]["lenet"]["per_dataset"] = {
        "fashion-mnist": {"epochs": 50, "lr": 6e-3, "augment_shift": 1, "arch": {"dropout": 0.1}},
        "mine": {"batch_size": 16}}
    section = load_params(write_params(params)).models["lenet"]
    fashion, digits, mine = section.on("fashion-mnist"), section.on("mnist-5k"), section.on("mine")
    assert (fashion.epochs, fashion.lr, fashion.augment_shift) == (50, 6e-3, 1)
    assert fashion.arch == {**params["models"]["lenet"]["arch"], "dropout": 0.1}
    assert fashion.batch_size == section.batch_size and fashion.per_dataset == {}
    assert digits == section.model_copy(update={"per_dataset": {}})
    assert mine.batch_size == 16 and mine.epochs == section.epochs


def test_a_recipes_budget_replaces_the_sections(params: dict[str, Any], write_params: WriteParams) -> None:
    """epochs and steps are one budget: a section switched to steps keeps its recipe's epochs on that
    dataset, and a recipe in steps replaces the section's epochs."""
    params["models"]["lenet"].update(epochs=None, steps=30, per_dataset={"fashion-mnist": {"epochs": 50}})
    params["models"]["mlp"].update(epochs=20, steps=None, per_dataset={"fashion-mnist": {"steps": 100}})
    models = load_params(write_params(params)).models
    assert (models["lenet"].on("fashion-mnist").epochs, models["lenet"].on("fashion-mnist").steps) == (50, None)
    assert (models["lenet"].on("mnist-5k").epochs, models["lenet"].on("mnist-5k").steps) == (None, 30)
    assert (models["mlp"].on("fashion-mnist").epochs, models["mlp"].on("fashion-mnist").steps) == (None, 100)


@pytest.mark.parametrize("recipe_for", ["synthetic", "mnist-5k"])
def test_train_stage_trains_with_its_datasets_recipe(stage_dir: Path, params: dict[str, Any], recipe_for: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The train stage applies the per_dataset entry of the dataset it trains on (here 2 epochs, another
    width), and only that one: another dataset's entry leaves the section's 1 epoch and its width."""
    import torch

    from conftest import call_stage, dump_params

    params["device"] = "cpu"
    params["image_folders"] = {"synthetic": str(stage_dir / "folder")}  # the stage data's name, as a user's
    params["models"]["mlp"].update(epochs=1, batch_size=32, per_dataset={
        recipe_for: {"epochs": 2, "arch": {"hidden": [24]}}})
    dump_params(params, stage_dir / "params.yaml")
    out, live = stage_dir / "mlp.pt", stage_dir / "live"
    code, err = call_stage("train", "--model", "mlp", "--parsed", stage_dir / "parsed", "--split",
                           stage_dir / "split", "--out", out, "--live", live, "--params", stage_dir / "params.yaml",
                           capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    applied = recipe_for == "synthetic"
    epochs = len((live / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()) - 1
    assert epochs == (2 if applied else 1)
    hidden = torch.load(out, weights_only=True)["meta"]["arch"]["hidden"]
    assert hidden == ([24] if applied else params["models"]["mlp"]["arch"]["hidden"])
