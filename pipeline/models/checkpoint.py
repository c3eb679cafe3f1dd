"""Trained weights on disk, with what is needed to rebuild the model (no pickled code)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from pipeline.io import atomic_file
from pipeline.models import create_model


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> None:
    """Save weights plus `meta`: model name, arch, image_shape, classes and input normalisation.
    Plain types only, so loading works with weights_only=True."""
    # Through a file object: torch.save names the archive after a path it is given, and the
    # temporary name would make identical weights hash differently.
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save({"meta": meta, "state_dict": model.state_dict()}, f)


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by save_model; returns (model in eval mode on `device`, meta)."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    meta = checkpoint["meta"]
    model = create_model(meta["model"], tuple(meta["image_shape"]), len(meta["classes"]), **meta["arch"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), meta
