"""ONNX export of a trained model, held to PyTorch by onnxruntime on a whole test set before it is written.

The exported graph takes what the parsed data holds, uint8 images (B, H, W), and returns logits
(B, classes): the input normalisation of the train split is inside the graph, and the model's meta
(classes, dataset, model, image_shape) is in the file's metadata, so the .onnx file stands alone for
predict on a machine without torch. The exporter is torch.onnx's dynamo-based one (torch.export, then
onnxscript), the default of torch 2.13.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.inference import Normalization
from pipeline.predict import ONNX_META_KEY

OPSET = 18  # ONNX opset of the exported graph (onnxruntime 1.32 runs opsets up to 23)
TOLERANCE = 1e-4  # largest |onnxruntime - torch| logit difference accepted, on every test image


class Preprocessed(nn.Module):
    """The model behind its input normalisation: uint8 images (B, H, W) -> logits (B, classes)."""

    def __init__(self, model: nn.Module, norm: Normalization) -> None:
        super().__init__()
        self.model, self.norm = model, norm

    def forward(self, images: Tensor) -> Tensor:
        return self.model(self.norm.apply(images))


def exporter_failure(err: BaseException) -> str:
    """The exporter's message in one line: its own first sentence, then the error at the root of it."""
    root = err
    while root.__cause__ is not None:
        root = root.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # the exporter colours its message for a terminal
    text = " ".join(text.split("\n")[0].split(". ")[0].split()).rstrip(".")
    if root is not err:
        text += f" ({type(root).__name__}: {' '.join(str(root).split())[:200]})"
    return f"{type(err).__name__}: {text}"


def to_onnx(model: nn.Module, meta: dict[str, Any], opset: int = OPSET) -> bytes:
    """The serialised ONNX model; a model the exporter cannot handle raises ValueError with its message."""
    import onnx

    height, width = meta["image_shape"][1:]
    wrapped = Preprocessed(model.eval(), Normalization(**meta["normalization"]))
    sample = torch.zeros(2, height, width, dtype=torch.uint8)
    # Their progress notes, torchvision's absence and torch.export's logged tracebacks are noise here: a
    # failure reaches the caller as the exception, and that is reported.
    for name, level in (("torch", logging.CRITICAL), ("onnxscript", logging.WARNING), ("onnx_ir", logging.WARNING)):
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes
            program = torch.onnx.export(wrapped, (sample,), dynamo=True, opset_version=opset, verbose=False,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    # Whatever the exporter raises (torch.export's, onnxscript's or the model's own errors during tracing)
    # means this model has no ONNX form: the caller reports it with the exporter's message.
    except Exception as err:  # noqa: BLE001
        raise ValueError(exporter_failure(err)) from err
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {ONNX_META_KEY: json.dumps({**meta, "opset": opset, "input": "uint8 (B, H, W)"})})
    return proto.SerializeToString()


def compare(onnx_model: bytes, model: nn.Module, meta: dict[str, Any], images: np.ndarray,
            batch_size: int) -> dict[str, float | int]:
    """onnxruntime against PyTorch on `images` (uint8 (N, H, W)): the largest logit difference and how
    many predicted classes differ."""
    import onnxruntime as ort

    from pipeline.inference import predict

    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    norm = Normalization(**meta["normalization"])
    worst, disagreements = 0.0, 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        expected = predict(model, torch.from_numpy(batch), norm, batch_size).numpy()
        got = session.run(None, {"images": batch})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
        disagreements += int((got.argmax(1) != expected.argmax(1)).sum())
    return {"images": len(images), "max_abs_logit_difference": worst, "class_disagreements": disagreements}
