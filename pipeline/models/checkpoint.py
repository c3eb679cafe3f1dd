"""Trained weights on disk, with what is needed to rebuild the model (no pickled code)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from pipeline.io import atomic_file, reading
from pipeline.models import create_model
from pipeline.runtime import UserError


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> None:
    """Save weights plus `meta`: model name, arch, image_shape, classes and input normalisation.
    Plain types only, so loading works with weights_only=True."""
    # Through a file object: torch.save names the archive after a path it is given, and the
    # temporary name would make identical weights hash differently.
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save({"meta": meta, "state_dict": model.state_dict()}, f)


def check_trained_on(meta: dict[str, Any], path: str | os.PathLike, dataset: str, classes: list[str],
                     image_shape: tuple[int, int, int]) -> None:
    """Refuse weights trained on another dataset, other classes or another image shape than the data given:
    with the same class count their metrics would be wrong without a sign of it."""
    expected = {"dataset": dataset, "classes": list(classes), "image shape": list(image_shape)}
    trained = {"dataset": meta.get("dataset"), "classes": list(meta["classes"]), "image shape": list(meta["image_shape"])}
    if differ := [key for key in expected if trained[key] != expected[key]]:
        raise UserError(f"{path}: trained on {trained['dataset']} ({len(trained['classes'])} classes), not on "
                        f"{dataset} ({len(classes)} classes): the {' and '.join(differ)} differ; evaluate it on "
                        f"the data it was trained on, or train on {dataset}")


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by save_model; returns (model in eval mode on `device`, meta)."""
    with reading(path, "train"):
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        meta, state = checkpoint["meta"], checkpoint["state_dict"]
        shape, classes = tuple(meta["image_shape"]), len(meta["classes"])
    model = create_model(meta["model"], shape, classes, **meta["arch"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # tensors missing, unexpected or of another shape
        raise UserError(f"{path}: its weights do not fit the {meta['model']} model its metadata describes "
                        f"({str(err).splitlines()[-1].strip()[:120]}); rerun the train stage (dvc repro -f)") from None
    return model.to(device).eval(), meta
