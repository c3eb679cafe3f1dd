"""Which test images a model got right: results/<dataset>/<model>/correct.json, small and git-tracked, so
two revisions compare image by image (paired) from git alone. It names its test set by a hash of the test
indices, labels and pixels: outcomes on different test sets are never paired."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline.stats import wilson


def hash_test_set(indices: np.ndarray, labels: np.ndarray, images: np.ndarray) -> str:
    """'sha256:<hex>' of the test rows (int (N,)), their labels (int (N,)) and pixels (uint8 (N, H, W)):
    another split, another dataset version or another order gives another id."""
    digest = hashlib.sha256()
    for name, array in (("indices", np.asarray(indices, "<i8")), ("labels", np.asarray(labels, "<i8")),
                        ("images", np.asarray(images, np.uint8))):
        digest.update(f"{name}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class Outcomes:
    test_set: str  # hash_test_set()
    correct: np.ndarray  # bool (N,): image i of the test set was classified right


def encode(outcomes: Outcomes, labels: np.ndarray, classes: list[str]) -> dict:
    """The JSON of correct.json: the bitmap (base64 of np.packbits, 125 bytes per 1,000 images) and, as
    records `dvc plots` draws, each class's test accuracy with its Wilson interval (classes with images)."""
    correct = outcomes.correct.astype(bool)
    per_class = []
    for index, name in enumerate(classes):
        mask = labels == index
        if mask.any():
            interval = wilson(int(correct[mask].sum()), int(mask.sum()))
            per_class.append({"class": name, "images": int(mask.sum()), "accuracy": interval.estimate,
                              "low": interval.low, "high": interval.high})
    return {"test_set": outcomes.test_set, "num_images": len(correct),
            "correct": base64.b64encode(np.packbits(correct).tobytes()).decode("ascii"), "per_class": per_class}


def decode(data: object) -> Outcomes:
    """Outcomes from correct.json's parsed JSON; ValueError naming what is wrong with it."""
    if not isinstance(data, dict) or not {"test_set", "num_images", "correct"} <= set(data):
        raise ValueError("not a correct.json: it needs test_set, num_images and correct")
    count = data["num_images"]
    try:
        packed = np.frombuffer(base64.b64decode(data["correct"], validate=True), np.uint8)
    except (binascii.Error, TypeError) as err:
        raise ValueError(f"its bitmap is not base64 ({err})") from None
    if not isinstance(count, int) or count < 0 or len(packed) != (count + 7) // 8:
        raise ValueError(f"its bitmap holds {len(packed)} bytes, not the {count} bits num_images says")
    return Outcomes(str(data["test_set"]), np.unpackbits(packed, count=count).astype(bool))
