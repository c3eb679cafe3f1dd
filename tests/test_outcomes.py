"""correct.json: which test images a model got right, as a bitmap, and the hash that names the test set."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from pipeline.outcomes import Outcomes, decode, encode, hash_test_set


@pytest.mark.parametrize("count", [1, 7, 8, 9, 1000, 10001])
def test_round_trip(count: int) -> None:
    rng = np.random.default_rng(count)
    correct, labels = rng.random(count) < 0.9, rng.integers(0, 3, count)
    data = json.loads(json.dumps(encode(Outcomes("sha256:x", correct), labels, ["a", "b", "c"])))
    assert len(base64.b64decode(data["correct"])) == (count + 7) // 8  # 125 bytes per 1,000 images
    back = decode(data)
    assert back.test_set == "sha256:x" and back.correct.dtype == bool
    np.testing.assert_array_equal(back.correct, correct)
    by_class = {record["class"]: record for record in data["per_class"]}
    for index, name in enumerate(["a", "b", "c"]):
        if (labels == index).any():
            record = by_class[name]
            assert record["accuracy"] == pytest.approx(correct[labels == index].mean())
            assert record["low"] <= record["accuracy"] <= record["high"]
            assert record["images"] == int((labels == index).sum())


def test_a_class_without_test_images_has_no_record() -> None:
    data = encode(Outcomes("sha256:x", np.array([True, False])), np.array([0, 0]), ["a", "b"])
    assert [record["class"] for record in data["per_class"]] == ["a"]


def test_hash_test_set_names_rows_labels_and_pixels() -> None:
    rng = np.random.default_rng(0)
    indices, labels = np.arange(10, 20), rng.integers(0, 10, 10)
    images = rng.integers(0, 256, (10, 4, 4), dtype=np.uint8)
    same = hash_test_set(indices, labels, images)
    assert same == hash_test_set(indices.astype(np.int32), labels, images) and same.startswith("sha256:")
    other_pixels = images.copy()
    other_pixels[3, 1, 1] ^= 1
    changed = [hash_test_set(indices + 1, labels, images), hash_test_set(indices, (labels + 1) % 10, images),
               hash_test_set(indices, labels, other_pixels), hash_test_set(indices[::-1], labels[::-1], images[::-1])]
    assert len({same, *changed}) == 5


@pytest.mark.parametrize(("data", "message"), [
    ([], "not a correct.json"),
    ({"test_set": "x", "num_images": 3}, "not a correct.json"),
    ({"test_set": "x", "num_images": 3, "correct": "@@@"}, "not base64"),
    ({"test_set": "x", "num_images": 9, "correct": base64.b64encode(b"\x00").decode()}, "1 bytes, not the 9 bits"),
])
def test_decode_rejects(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(data)
