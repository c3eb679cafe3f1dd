"""Classify image files with a trained model: a .pt through PyTorch, an .onnx through onnxruntime alone.

Importing this module imports neither torch nor onnxruntime: each is imported when a model of its kind is
loaded, so a machine without torch classifies with an .onnx file. Images go through pipeline.data.convert,
the conversion user image folders share.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.convert import BadImage, Conversion, Converted, Invert, convert_image
from pipeline.runtime import UserError

ONNX_META_KEY = "mnist_pipeline"  # the ONNX metadata_props entry holding the model's meta as JSON
FORMATS = ("table", "csv", "json")


@dataclass
class Classifier:
    """A loaded model: `logits` maps uint8 images (B, H, W) to float32 logits (B, classes)."""

    meta: dict[str, Any]  # model, dataset, classes, image_shape [1, H, W], ...
    logits: Callable[[np.ndarray], np.ndarray]
    runtime: str  # torch | onnxruntime

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.meta["image_shape"][1:])


def load_classifier(path: Path, device: str = "auto", threads: int | None = None) -> Classifier:
    """A .onnx file runs on onnxruntime (CPU); anything else is read as the train stage's .pt."""
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file; give a models/<dataset>/<model>.pt or an exported .onnx")
    return _onnx_classifier(path, threads) if path.suffix.lower() == ".onnx" else _torch_classifier(path, device, threads)


def _torch_classifier(path: Path, device_name: str, threads: int | None) -> Classifier:
    import torch

    from pipeline.device import resolve_device
    from pipeline.inference import Normalization
    from pipeline.models.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    model, meta = load_model(path, device)
    norm = Normalization(**meta["normalization"])

    @torch.inference_mode()
    def logits(images: np.ndarray) -> np.ndarray:
        return model(norm.apply(torch.from_numpy(images).to(device))).float().cpu().numpy()

    return Classifier(meta, logits, "torch")


def _onnx_classifier(path: Path, threads: int | None) -> Classifier:
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    if threads:
        options.intra_op_num_threads = threads
    errors = (ort_errors.Fail, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoSuchFile,
              ort_errors.NotImplemented, ort_errors.InvalidArgument, ort_errors.RuntimeException, OSError)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except errors as err:
        raise UserError(f"--weights {path}: not an ONNX model onnxruntime can load ({str(err).strip()[:160]})") from None
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
    if text is None:
        raise UserError(f"--weights {path}: an ONNX model, but not one exported by this pipeline (no "
                        f"{ONNX_META_KEY!r} metadata); export one with python -m src.export")
    meta = json.loads(text)
    name = session.get_inputs()[0].name

    def logits(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(images, np.uint8)})[0]

    return Classifier(meta, logits, "onnxruntime")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    file: str
    top: list[tuple[str, float]]  # (class, probability), most probable first
    conversion: Converted

    def record(self) -> dict[str, Any]:
        return {"file": self.file, "class": self.top[0][0], "probability": round(self.top[0][1], 6),
                "top": [{"class": name, "probability": round(p, 6)} for name, p in self.top],
                "conversion": [str(step) for step in self.conversion.steps]}


def convert_files(files: list[Path], size: tuple[int, int], invert: Invert, strict: bool,
                  on_skip: Callable[[str], None]) -> list[tuple[Path, Converted]]:
    """Each file converted; a file that is not a usable image is reported through on_skip and left out,
    or, with `strict`, is a UserError."""
    conversion, converted = Conversion(size, invert), []
    for path in files:
        try:
            converted.append((path, convert_image(path, str(path), conversion)))
        except BadImage as err:
            if strict:
                raise UserError(f"{err} (--strict: any unusable file stops the run)") from None
            on_skip(str(err))
        except OSError as err:  # unreadable: a directory entry that vanished, no permission
            if strict:
                raise UserError(f"{path}: cannot be read ({err.strerror})") from None
            on_skip(f"{path}: cannot be read ({err.strerror})")
    return converted


def classify(classifier: Classifier, converted: list[tuple[Path, Converted]], topk: int,
             batch_size: int) -> list[Prediction]:
    """Batched inference: one batch of images in memory at the model at a time."""
    classes, predictions = classifier.classes, []
    k = min(topk, len(classes))
    for start in range(0, len(converted), batch_size):
        chunk = converted[start:start + batch_size]
        probs = softmax(classifier.logits(np.stack([c.image for _, c in chunk])).astype(np.float64))
        for (path, conv), row in zip(chunk, probs):
            order = np.argsort(-row, kind="stable")[:k]
            predictions.append(Prediction(str(path), [(classes[i], float(row[i])) for i in order], conv))
    return predictions


def render(predictions: list[Prediction], fmt: str) -> str:
    """The predictions as an aligned table, CSV (one row per file, the top k as class_i / probability_i
    columns) or JSON (a list of records)."""
    if fmt == "json":
        return json.dumps([p.record() for p in predictions], indent=2) + "\n"
    k = max((len(p.top) for p in predictions), default=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", *[f"{field}_{i}" for i in range(1, k + 1) for field in ("class", "probability")],
                         "conversion"])
        for p in predictions:
            writer.writerow([p.file, *[v for name, prob in p.top for v in (name, f"{prob:.6f}")],
                             p.conversion.describe()])
        return out.getvalue()
    rows = [["file", "class", "prob", f"top {k}", "conversion"]]
    rows += [[p.file, p.top[0][0], f"{p.top[0][1]:.3f}", ", ".join(f"{name} {prob:.3f}" for name, prob in p.top),
              p.conversion.describe()] for p in predictions]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] + "\n" for row in rows)
