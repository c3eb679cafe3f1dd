"""Evaluation of a model: metrics, confusion data, rotation robustness, features, filters, and bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from pipeline.data.parsed import ParsedDataset
from pipeline.evaluation import _sync, averaged_logits, evaluate, first_conv_filters, trained_transforms, tta_views
from pipeline.inference import Normalization, predict
from pipeline.metrics import confusion_matrix, confusion_records, evenly_spaced
from pipeline.models import create_model
from conftest import SHARED_DATASETS

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
FASHION_TEST_IMAGES = SHARED_DATASETS / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"  # honours $MNIST_PIPELINE_MIRROR


@pytest.fixture(scope="module")
def lenet(synthetic: ParsedDataset) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("lenet", synthetic.image_shape, len(synthetic.classes))


def run_evaluate(model: torch.nn.Module, data: ParsedDataset, images: np.ndarray, batch_size: int,
                 rotations: list[float]) -> tuple[dict, dict, object]:
    return evaluate(model, images, data.labels, data.classes, norm=Normalization.fit(data.images),
                    batch_size=batch_size, device=CPU, rotations=rotations, bins=10, confusions=4,
                    feature_rows=evenly_spaced(len(images), 50))


def test_evaluate_and_confusion(lenet: torch.nn.Module, synthetic: ParsedDataset,
                                synthetic_split: dict[str, np.ndarray]) -> None:
    test = synthetic_split["test"]
    images, labels = synthetic.images[test], synthetic.labels[test]
    norm = Normalization.fit(synthetic.images[synthetic_split["train"]])
    metrics, details, outputs = evaluate(lenet, images, labels, synthetic.classes, norm=norm, batch_size=7,
                                         device=CPU)
    predictions = outputs.predictions
    assert details["num_images"] == len(test) and predictions.shape == (len(test),)
    assert metrics["accuracy"] == pytest.approx(np.mean(predictions == labels))
    loss = F.cross_entropy(predict(lenet, torch.from_numpy(images), norm, batch_size=64), torch.from_numpy(labels))
    assert metrics["loss"] == pytest.approx(loss.item(), abs=1e-6)
    assert set(details["per_class"]) == set(synthetic.classes)

    records = confusion_records(labels, predictions, synthetic.classes)
    assert len(records) == len(test)
    assert all(set(record) == {"actual", "predicted"} for record in records)
    assert all(isinstance(v, str) and v in synthetic.classes for record in records for v in record.values())
    assert [r["actual"] for r in records] == [synthetic.classes[k] for k in labels]

    matrix = confusion_matrix(labels, predictions, len(synthetic.classes))
    assert matrix.shape == (10, 10) and matrix.sum() == len(test)
    assert np.trace(matrix) == np.sum(predictions == labels)
    np.testing.assert_array_equal(matrix.sum(1), np.bincount(labels, minlength=10))


def test_metrics_contents(lenet: torch.nn.Module, synthetic: ParsedDataset) -> None:
    metrics, details, outputs = run_evaluate(lenet, synthetic, synthetic.images, 64, [0, 45, 90])
    labels, predictions = synthetic.labels, outputs.predictions
    # The headline numbers only: what `dvc exp show` lists for every model
    assert list(metrics) == ["accuracy", "loss", "ece", "accuracy_rotated_45", "throughput_images_per_s"]
    assert metrics["accuracy"] == pytest.approx(np.mean(predictions == labels))
    assert set(details["rotation_accuracy"]) == {"0", "45", "90"}
    assert details["rotation_accuracy"]["0"] == pytest.approx(metrics["accuracy"])  # 0 degrees is the identity
    assert metrics["accuracy_rotated_45"] == details["rotation_accuracy"]["45"]
    assert details["rotation"] == [{"degrees": degrees, "accuracy": details["rotation_accuracy"][f"{degrees:g}"]}
                                   for degrees in (0, 45, 90)]
    for k, name in enumerate(synthetic.classes):
        mine, said = labels == k, predictions == k
        assert details["per_class"][name]["recall"] == pytest.approx(np.mean(said[mine]))
        assert details["per_class"][name]["precision"] == pytest.approx(np.mean(mine[said]) if said.any() else 0.0)
    assert details["num_parameters"] == sum(p.numel() for p in lenet.parameters())
    assert details["num_images"] == len(labels)
    assert metrics["throughput_images_per_s"] > 0
    assert len(details["confusions"]) <= 4 and all(rank["count"] > 0 for rank in details["confusions"].values())
    assert 0 <= metrics["ece"] <= 1
    assert outputs.probabilities.shape == (len(labels), 10)
    np.testing.assert_allclose(outputs.probabilities.sum(1), 1, atol=1e-5)
    assert outputs.features.shape == (50, lenet.num_features)
    json.dumps([metrics, details])  # plain JSON types only


def test_batch_size_does_not_change_results(lenet: torch.nn.Module, synthetic: ParsedDataset) -> None:
    small, small_details, small_out = run_evaluate(lenet, synthetic, synthetic.images, 7, [30])
    large, large_details, large_out = run_evaluate(lenet, synthetic, synthetic.images, 1000, [30])
    for metrics in (small, large):
        metrics.pop("throughput_images_per_s")
    assert small.keys() == large.keys()
    assert "accuracy_rotated_45" not in small  # 45 degrees was not evaluated
    assert small_details["rotation_accuracy"] == large_details["rotation_accuracy"]
    assert small["loss"] == pytest.approx(large["loss"], rel=1e-5)
    np.testing.assert_allclose(small_out.probabilities, large_out.probabilities, atol=1e-5)
    np.testing.assert_allclose(small_out.features, large_out.features, atol=1e-4)


def test_rotation_is_applied(lenet: torch.nn.Module, synthetic: ParsedDataset) -> None:
    """A test set turned clockwise by a quarter, evaluated at +90 degrees, is the original test set again."""
    turned = np.ascontiguousarray(np.rot90(synthetic.images, k=-1, axes=(1, 2)))
    original, _, _ = run_evaluate(lenet, synthetic, synthetic.images, 128, [0])
    rotated, rotated_details, _ = run_evaluate(lenet, synthetic, turned, 128, [0, 90])
    assert rotated_details["rotation_accuracy"]["90"] == pytest.approx(original["accuracy"])
    assert rotated["accuracy"] != pytest.approx(original["accuracy"])  # the turned set alone is another set


BOTH = ("flip", "shift")


@pytest.mark.parametrize(("asked", "keeps_label", "trained_with", "views"), [
    ("none", BOTH, BOTH, ()), ("both", BOTH, BOTH, BOTH), ("both", ("shift",), BOTH, ("shift",)),
    ("flip", ("shift",), BOTH, ()), ("shifts", BOTH, BOTH, ("shift",)), ("both", (), BOTH, ()),
    ("both", BOTH, ("flip",), ("flip",)), ("both", BOTH, (), ()), ("shifts", BOTH, ("flip",), ())])
def test_tta_views_follow_the_dataset_and_the_training(asked: str, keeps_label: tuple, trained_with: tuple,
                                                        views: tuple) -> None:
    """evaluate.tta asks; only what keeps the dataset's labels (digits: never a flip) and what the model
    trained with is averaged."""
    assert tta_views(asked, keeps_label, trained_with) == views


def test_trained_transforms_from_the_saved_metadata() -> None:
    assert trained_transforms({"augment_flip": True, "augment_shift": 2}) == BOTH
    assert trained_transforms({"augment_flip": False, "augment_shift": 1}) == ("shift",)
    assert trained_transforms({"augment_flip": True, "augment_shift": 0}) == ("flip",)
    assert trained_transforms({}) == ()  # weights saved before the train stage recorded them


def test_averaged_logits_weigh_views_as_airbench(lenet: torch.nn.Module, synthetic: ParsedDataset) -> None:
    """flip: the image and its mirror half each; shift: that, half, and the same of the image moved one pixel
    up-left and one down-right, a quarter each. Checked against logits of views built by hand (NumPy)."""
    pixels = synthetic.images[:16]
    norm = Normalization.fit(synthetic.images)

    def logits(images: np.ndarray) -> torch.Tensor:
        return lenet.eval()(norm.apply(torch.from_numpy(np.ascontiguousarray(images)))).float()

    def moved(images: np.ndarray, d: int) -> np.ndarray:  # content moved by (d, d), zero fill
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
        return padded[:, 1 - d:1 - d + 28, 1 - d:1 - d + 28]

    with torch.inference_mode():
        plain = logits(pixels)
        mirrored = {d: 0.5 * logits(moved(pixels, d)) + 0.5 * logits(moved(pixels, d)[..., ::-1]) for d in (-1, 1)}
        flip = 0.5 * plain + 0.5 * logits(pixels[..., ::-1])
        expected = {(): plain, ("flip",): flip,
                    ("shift",): 0.5 * plain + 0.25 * (logits(moved(pixels, -1)) + logits(moved(pixels, 1))),
                    ("flip", "shift"): 0.5 * flip + 0.25 * (mirrored[-1] + mirrored[1])}
        for views, want in expected.items():
            got, untouched = averaged_logits(lenet, torch.from_numpy(pixels), norm, views)
            torch.testing.assert_close(got, want, msg=str(views))
            torch.testing.assert_close(untouched, plain)
    assert moved(pixels, 1)[:, 1:, 1:].tolist() == pixels[:, :-1, :-1].tolist()  # down-right, as translate does


def test_tta_in_details_and_rotations_stay_plain(lenet: torch.nn.Module, synthetic: ParsedDataset) -> None:
    """With views averaged, details.json names them and keeps the plain accuracy; the rotation curve
    measures the plain model (the same with and without)."""
    plain, plain_details, _ = run_evaluate(lenet, synthetic, synthetic.images, 64, [0, 45])
    averaged, details, outputs = evaluate(
        lenet, synthetic.images, synthetic.labels, synthetic.classes, norm=Normalization.fit(synthetic.images),
        batch_size=64, device=CPU, rotations=[0, 45], bins=10, confusions=4, tta=("flip", "shift"))
    assert plain_details["tta"] == "none" and details["tta"] == "flip+shift"
    assert details["accuracy_without_tta"] == plain["accuracy"] == plain_details["accuracy_without_tta"]
    assert details["rotation_accuracy"] == plain_details["rotation_accuracy"]
    assert averaged["accuracy"] == pytest.approx(np.mean(outputs.predictions == synthetic.labels))
    assert averaged["loss"] != pytest.approx(plain["loss"])


def test_class_absent_from_the_test_set_is_undefined(lenet: torch.nn.Module, synthetic: ParsedDataset) -> None:
    """A class with no test image has no recall and no F1 (null, not 0), and the macro F1 leaves it out."""
    rows = synthetic.labels != 9
    images, labels = synthetic.images[rows], synthetic.labels[rows]
    _, details, outputs = evaluate(lenet, images, labels, synthetic.classes, norm=Normalization.fit(synthetic.images),
                                   batch_size=64, device=CPU)
    assert details["classes_absent_from_test"] == "9"
    absent = details["per_class"]["9"]
    assert absent["recall"] is None and absent["f1"] is None
    assert absent["precision"] == (0.0 if (outputs.predictions == 9).any() else None)  # 0: every "9" said was wrong
    f1 = [details["per_class"][str(k)]["f1"] for k in range(9)]
    assert details["f1_macro"] == pytest.approx(np.mean(f1))
    assert details["f1_macro"] == pytest.approx(
        f1_score(labels, outputs.predictions, labels=np.arange(9), average="macro", zero_division=0))


def test_throughput_waits_for_every_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels run asynchronously on any accelerator, not only CUDA: the clock is read after a sync."""
    synced: list[torch.device] = []
    monkeypatch.setattr(torch.accelerator, "synchronize", lambda device=None: synced.append(device))
    for kind in ("cuda", "mps", "xpu", "cpu"):
        _sync(torch.device(kind))
    assert [device.type for device in synced] == ["cuda", "mps", "xpu"]


def test_first_conv_filters(synthetic: ParsedDataset) -> None:
    lenet = create_model("lenet", synthetic.image_shape, 10, channels=[4, 8])
    assert first_conv_filters(lenet).shape == (4, 1, 5, 5)
    assert first_conv_filters(create_model("mlp", synthetic.image_shape, 10)) is None


# A fresh interpreter evaluates LeNet on a set of images and prints how far evaluation raised the process's
# peak memory above its peak before evaluating: the larger of the rises of the peak resident set (ru_maxrss)
# and of the peak address space (VmPeak, what was asked of the OS whether or not it stayed resident: a busy
# machine that pages memory out lowers the first, not the second), in MiB.
PROBE = """
import gzip, resource, sys
import numpy as np, torch

def peaks():
    with open("/proc/self/status") as status:
        vm_peak = next(int(line.split()[1]) for line in status if line.startswith("VmPeak:"))
    return np.array([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, vm_peak])  # KiB
from pipeline.evaluation import evaluate
from pipeline.inference import Normalization
from pipeline.metrics import evenly_spaced
from pipeline.models import create_model

source, count, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if source == "generated":
    images = np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
else:
    with gzip.open(source) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count].copy()
labels = np.arange(len(images)) % 10
torch.manual_seed(0)
model = create_model("lenet", (1, 28, 28), 10)
norm = Normalization(mean=72.9, std=90.0)
kwargs = dict(norm=norm, device=torch.device("cpu"), rotations=[90])
evaluate(model, images[:64], labels[:64], [str(k) for k in range(10)], batch_size=64, **kwargs)  # imports, pools
before = peaks()
evaluate(model, images, labels, [str(k) for k in range(10)], batch_size=batch_size,
         feature_rows=evenly_spaced(len(images), 1000), **kwargs)
print(max(peaks() - before) / 1024)
"""
PEAK_LIMIT_MIB = 120  # batched LeNet evaluation stays far below; the whole set at once goes far above


def peak_rise_mib(source: str, count: int, batch_size: int) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, source, str(count), str(batch_size)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


def test_memory_bounded_on_a_large_generated_set() -> None:
    """12,000 images: batches of 500 keep the peak low; evaluating them as one batch (what the ResNet notebook did)
    breaks the same limit, so the limit does tell the two apart."""
    batched = peak_rise_mib("generated", 12_000, 500)
    assert batched < PEAK_LIMIT_MIB, f"batched evaluation raised peak memory by {batched:.0f} MiB"
    whole = peak_rise_mib("generated", 12_000, 12_000)
    assert whole > PEAK_LIMIT_MIB, f"one 12,000-image batch raised it by only {whole:.0f} MiB: the limit is too loose"


@pytest.mark.skipif(not FASHION_TEST_IMAGES.is_file(), reason=f"no Fashion-MNIST test set at {FASHION_TEST_IMAGES}")
def test_memory_bounded_on_fashion_mnist_test_set() -> None:
    """The 10,000 real Fashion-MNIST test images with params.yaml's evaluate.batch_size (1000)."""
    rise = peak_rise_mib(str(FASHION_TEST_IMAGES), 10_000, 1000)
    assert rise < PEAK_LIMIT_MIB, f"evaluating Fashion-MNIST's test set raised peak memory by {rise:.0f} MiB"
