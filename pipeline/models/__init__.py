"""The model registry: `create_model(name, ...)`.

Each architecture lives in its own module, imported only when asked for, so a stage that trains
`mlp` does not depend on (or import) `lenet.py`. A module provides `Config` (its `arch:` keys
in params.yaml) and `build(image_shape, num_classes, config)`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.config import MODEL_NAMES
from pipeline.runtime import UserError
from pipeline.schema import validate

if TYPE_CHECKING:
    from torch import nn

MODELS = {name: f"pipeline.models.{name}" for name in MODEL_NAMES}  # name -> module


def create_model(name: str, image_shape: tuple[int, int, int], num_classes: int, *, arch_key: str | None = None,
                 **arch: Any) -> nn.Module:
    """Build model `name` for (C, H, W) inputs; `arch` are its hyperparameters from params.yaml, where an
    error names them as `arch_key` (default models.<name>.arch)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    module = importlib.import_module(MODELS[name])
    config = validate(module.Config, arch, arch_key or f"models.{name}.arch")
    return module.build(image_shape, num_classes, config)
