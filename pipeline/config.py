"""params.yaml -> typed, validated settings.

Every section is a strict pipeline.schema.Section: an unknown key, a wrong type or an out-of-range
value becomes one UserError line that names the key, the problem and what is valid.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from ruamel.yaml import YAML, YAMLError

from pipeline.data.registry import DATASETS, LABEL_KEEPING
from pipeline.runtime import UserError
from pipeline.schema import (Fraction, FractionOrZero, NonNegativeFloat, PositiveFloat, PositiveInt, Section, Seed,
                             validate)

log = logging.getLogger(__name__)

# The models params.yaml may name; each is the module pipeline/models/<name>.py, which the registry
# (pipeline.models.create_model) imports by this name and dvc.yaml's train and evaluate stages depend on.
MODEL_NAMES = ("mlp", "lenet", "resnet", "eurnn", "lstm")


class RunConfig(Section):
    datasets: Annotated[list[str], Field(min_length=1)]  # datasets dvc.yaml generates stages for
    models: Annotated[list[str], Field(min_length=1)]  # models trained on each of them

    _known_models = field_validator("models")(lambda names: _check_names(names, MODEL_NAMES))


class SplitConfig(Section):
    seed: Seed  # RNG seed of the partition (independent of the training seed)
    val_fraction: Fraction  # share of the training pool held out for validation
    test_fraction: Fraction  # share of all images for datasets that have no official test set


DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")  # becomes a directory and part of stage names


def _check_image_folders(folders: dict[str, str]) -> dict[str, str]:
    for name, path in folders.items():
        if not DATASET_NAME.fullmatch(name):
            raise ValueError(f"name {name!r} must be lowercase letters, digits, '-' or '_'")
        if name in DATASETS:
            raise ValueError(f"name {name!r} is a built-in dataset; choose another")
        if not path.strip():
            raise ValueError(f"{name}: empty path; give the folder of <class>/<image> files")
    return folders


class ConversionConfig(Section):
    """image_conversion.<name>: the user folder <name> holds images of any format, size, color and polarity,
    each converted as predict converts its input (pipeline/data/convert.py)."""

    size: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = 28  # side or [H, W]
    invert: Literal["auto"] | bool = "auto"  # auto: invert images whose border is light; true / false: always / never

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, size: Any) -> Any:
        sides = size if isinstance(size, list) else [size]
        if len(sides) != (2 if isinstance(size, list) else 1) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
            raise ValueError(f"must be a positive side in pixels, or [height, width] (got {size!r})")
        return size

    @field_validator("invert", mode="before")
    @classmethod
    def _invert(cls, invert: Any) -> Any:
        if invert not in ("auto", True, False) or isinstance(invert, int) and not isinstance(invert, bool):
            raise ValueError(f"must be auto, true or false (got {invert!r})")
        return invert

    def options(self) -> dict[str, object]:
        """As pipeline.data.convert.Conversion takes them: size [H, W], invert auto | true | false."""
        size = [self.size, self.size] if isinstance(self.size, int) else list(self.size)
        return {"size": size, "invert": "auto" if self.invert == "auto" else ("true" if self.invert else "false")}


class TrainConfig(Section):
    """One model's section: how to train it, plus `arch`, which goes to the model's constructor."""

    epochs: PositiveInt | None = None  # full passes over the training rows; or set `steps` instead
    steps: PositiveInt | None = None  # optimizer-step budget (the last epoch may be partial); or `epochs`
    batch_size: PositiveInt
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"]
    lr: PositiveFloat  # peak learning rate of the schedule
    momentum: FractionOrZero = 0.0
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"  # lr over the optimizer steps
    grad_clip: PositiveFloat | None = None  # max global L2 norm of the gradients; null: off
    label_smoothing: FractionOrZero = 0.0  # of the training loss (validation stays plain)
    # auto: bfloat16 autocast where the device runs bf16 natively (pipeline.device.native_bf16), else fp32;
    # tf32: float32 matmuls and convolutions on CUDA's TF32 tensor cores (fp32 is IEEE float32 everywhere)
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "fp32"
    compile: bool = False  # torch.compile the model for training
    augment_rotation: Annotated[float, Field(ge=0, le=180)] = 0.0  # max random rotation of a train image, degrees
    augment_shift: Annotated[int, Field(ge=0, le=8)] = 0  # max random translation of a train image, pixels per axis
    # Mirror train images left-right at random; auto: where the dataset states that a flip keeps the label
    # (pipeline.data.registry: Fashion-MNIST yes, digits no), resolved by for_dataset before training.
    augment_flip: Literal[True, False, "auto"] = "auto"
    # Exponential moving average of the weights (timm's ModelEmaV3): the decay per optimizer step, warmed
    # up as timm's use_warmup does; 0: off. The averaged weights are validated, selected and saved.
    ema: FractionOrZero = 0.0
    arch: dict[str, Any] = Field(default_factory=dict)
    # dataset name -> the settings of this section that differ when training on that dataset (its recipe);
    # `arch` is merged key by key. Checked against the datasets by Params; applied by `on`.
    per_dataset: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("set exactly one of epochs and steps (the other to null)")
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to sgd and rmsprop only, not {self.optimizer}; set it to 0")
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        return self

    def on(self, dataset: str) -> TrainConfig:
        """This section as it trains on `dataset`: its `per_dataset` entry for that name (if any) over the
        section's own settings, `arch` merged key by key; the result has no per_dataset of its own."""
        return type(self).model_validate(self._settings_on(dataset))

    def _settings_on(self, dataset: str) -> dict[str, Any]:
        settings = self.model_dump(exclude={"per_dataset"})
        override = dict(self.per_dataset.get(dataset, {}))
        settings["arch"] = {**settings["arch"], **override.pop("arch", {})}
        if {"epochs", "steps"} & override.keys():  # the budget is one setting: a recipe's replaces the section's
            settings.update(epochs=None, steps=None)
        return {**settings, **override}

    def for_dataset(self, keeps_label: tuple[str, ...], name: str = "this dataset") -> TrainConfig:
        """This section as it trains on a dataset whose labels survive the transforms `keeps_label`
        (pipeline.data.registry.LABEL_KEEPING): `augment_flip: auto` resolved to true or false. An explicit
        flip or shift that the dataset does not keep is trained as asked, with a warning."""
        flip = "flip" in keeps_label if self.augment_flip == "auto" else self.augment_flip
        asked = {"flip": self.augment_flip is True, "shift": self.augment_shift > 0}
        for transform in (t for t, on in asked.items() if on and t not in keeps_label):
            log.warning("augment_%s is on, but %s does not state that a %s keeps its labels (it keeps: %s)",
                        transform, name, transform, ", ".join(keeps_label) or "none")
        return self.model_copy(update={"augment_flip": flip})


# Test accuracy with the images rotated by this many degrees is a headline metric (accuracy_rotated_45 in
# metrics.json, a column of the report) whenever evaluate.rotations lists the angle.
HEADLINE_ROTATION = 45


# Test-time augmentation: which views of each test image are averaged (their logits), as airbench does;
# only the views the dataset's labels survive are used (see pipeline.evaluation.tta_views).
TTA_CHOICES = ("none", "flip", "shifts", "both")


class EvaluateConfig(Section):
    batch_size: PositiveInt  # images per inference batch; bounds evaluation memory
    tta: Literal[TTA_CHOICES]  # none | flip | shifts | both
    rotations: Annotated[list[float], Field(min_length=1)]  # test-set rotation angles, degrees
    calibration_bins: PositiveInt  # equal-width confidence bins of the calibration error
    confusions: PositiveInt  # how many of the most frequent confusions details.json lists
    # test images whose penultimate features are kept for PCA / t-SNE (2-D projections need at least 2)
    embedding_points: Annotated[int, Field(ge=2)]


# host:port of a rendezvous: a name or IPv4 address, or an [IPv6] address
ENDPOINT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):[0-9]{1,5}")


class DistributedConfig(Section):
    """How many processes train one model (pipeline/distributed.py); the world size changes results."""

    nproc_per_node: PositiveInt  # training processes on each machine (1: one process, no process group)
    nnodes: PositiveInt  # machines taking part (above 1: the others join at rdzv_endpoint; docs/scaling.md)
    rdzv_endpoint: str  # host:port of the first machine's rendezvous, where the others meet it (nnodes > 1)
    timeout_s: PositiveFloat  # how long a rank waits for its peers (rendezvous, collectives) before failing

    _endpoint = field_validator("rdzv_endpoint")(lambda value: _check_endpoint(value))

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def _check_endpoint(value: str) -> str:
    if not ENDPOINT.fullmatch(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. node1.example.org:29400 or 10.0.0.1:29400)")
    return value


class PlotConfig(Section):
    grid_size: Annotated[int, Field(gt=0, le=20)]  # the predictions figure shows grid_size x grid_size images


class Params(Section):
    seed: Seed
    device: Literal["auto", "cpu", "cuda", "mps"]
    checkpoint_every_s: NonNegativeFloat  # training seconds between resume checkpoints
    distributed: DistributedConfig
    run: RunConfig
    split: SplitConfig
    models: dict[str, TrainConfig]
    evaluate: EvaluateConfig
    plot: PlotConfig
    image_folders: dict[str, str]  # user datasets: name -> folder of <class>/<image> files
    # name (of image_folders) -> conversion options; a folder named here need not be 8-bit grayscale of one size
    image_conversion: dict[str, ConversionConfig] = Field(default_factory=dict)
    # user datasets: name -> the transforms that keep its labels (a name left out: FOLDER_KEEPS_LABEL)
    image_folder_keeps_label: dict[str, list[Literal[LABEL_KEEPING]]] = Field(default_factory=dict)

    _known_models = field_validator("models")(lambda sections: _check_names(sections, MODEL_NAMES))
    _valid_folders = field_validator("image_folders")(_check_image_folders)

    @model_validator(mode="after")
    def _sections_exist(self) -> Params:
        known = {**DATASETS, **self.image_folders}
        if unknown := [name for name in self.run.datasets if name not in known]:
            raise ValueError(f"run.datasets: unknown name {unknown[0]!r}; valid: {', '.join(known)}")
        if stray := [name for name in self.image_conversion if name not in self.image_folders]:
            raise ValueError(f"image_conversion.{stray[0]}: no image_folders entry of that name; "
                             f"image_folders: {', '.join(self.image_folders) or 'none'}")
        missing = [name for name in self.run.models if name not in self.models]
        if missing:
            raise ValueError(f"run.models lists {missing[0]!r} but models: has no section for it")
        for model, section in self.models.items():
            for dataset, override in section.per_dataset.items():
                key = f"models.{model}.per_dataset.{dataset}"
                if dataset not in known:
                    raise ValueError(f"models.{model}.per_dataset: unknown dataset {dataset!r}; valid: "
                                     f"{', '.join(known)}")
                if "per_dataset" in override:
                    raise ValueError(f"{key}.per_dataset: per_dataset does not nest; give this section's settings "
                                     "(e.g. {epochs: 20})")
                if not isinstance(override.get("arch", {}), dict):
                    raise ValueError(f"{key}.arch: must be a mapping of arch settings")
                _validate_override(section, dataset, key)
        if stray := [name for name in self.image_folder_keeps_label if name not in self.image_folders]:
            raise ValueError(f"image_folder_keeps_label: {stray[0]!r} is not a name in image_folders; "
                             f"valid: {', '.join(self.image_folders) or 'none (image_folders is empty)'}")
        return self


def _validate_override(section: TrainConfig, dataset: str, key: str) -> None:
    """Raise ValueError naming `key`'s setting at fault when the section is invalid as it trains on `dataset`."""
    try:
        validate(TrainConfig, section._settings_on(dataset), prefix=key)
    except UserError as err:
        raise ValueError(str(err)) from None


def _check_names(names: Any, valid: tuple[str, ...]) -> Any:
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown name {name!r}; valid: {', '.join(valid)}")
    return names


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate params.yaml (YAML 1.2, as DVC reads it, so `1e-3` is a float)."""
    try:
        with open(path) as f:
            data = YAML(typ="safe", pure=True).load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; `git checkout {path}` restores the committed one") from None
    except YAMLError as err:
        raise UserError(_yaml_error(path, err)) from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); `git checkout {path}` restores the committed one") from None
    if not data:
        raise UserError(f"{path}: empty; it must hold the pipeline's settings (`git checkout {path}` restores them)")
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping of settings (seed: ..., run: ...), not a {type(data).__name__}")
    try:
        return validate(Params, data)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def _yaml_error(path: str | os.PathLike, err: YAMLError) -> str:
    """`path:line:column: problem` of a YAML syntax error (the duplicated key included), on one line."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    context = getattr(err, "context", None)
    detail = f"{context}: {problem}" if context and "duplicate" not in problem else problem
    return f"{where}: not valid YAML: {' '.join(detail.split())}"


if __name__ == "__main__":  # `python -m pipeline.config [params.yaml]`: check the settings before `dvc repro`
    import sys

    from pipeline.runtime import run_stage

    run_stage(lambda: load_params(*sys.argv[1:2]) and None)
