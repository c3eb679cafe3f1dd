"""Test-set evaluation: loss, accuracy, per-class precision / recall / F1, confusions, calibration,
rotation robustness, throughput and penultimate features, with one batch in memory at a time. The
metrics of the predictions themselves (NumPy only) are in pipeline/metrics.py."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_fscore_support
from torch import Tensor, nn

from pipeline.config import HEADLINE_ROTATION
from pipeline.inference import Normalization
from pipeline.metrics import calibration_bins, confusion_matrix, expected_calibration_error, top_confusions
from pipeline.stats import BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED, Interval, bootstrap_loss_ece, wilson
from pipeline.transforms import rotate, translate

# evaluate.tta -> the transforms it asks to average over (pipeline.data.registry.LABEL_KEEPING names)
TTA_TRANSFORMS = {"none": (), "flip": ("flip",), "shifts": ("shift",), "both": ("flip", "shift")}
TTA_SHIFTS = ((-1, -1), (1, 1))  # airbench's two translations: one pixel up-left, one down-right


def tta_views(asked: str, keeps_label: Sequence[str], trained_with: Sequence[str]) -> tuple[str, ...]:
    """The transforms test-time augmentation averages over: those evaluate.tta `asked` for that keep the
    dataset's labels (`keeps_label`, from the registry or params.yaml) and that the model saw in training
    (`trained_with`: augment_flip, augment_shift), in LABEL_KEEPING order. The last, as airbench's views
    are its training augmentations: a view the model never saw is a shifted input, not a second opinion
    (the Fashion-MNIST mlp trained with flips lost 0.4 points to one-pixel shifts, docs/recipes.md)."""
    return tuple(t for t in TTA_TRANSFORMS[asked] if t in keeps_label and t in trained_with)


def trained_transforms(meta: dict) -> tuple[str, ...]:
    """The LABEL_KEEPING transforms a model was trained with, from the metadata the train stage saved
    (weights saved before they were recorded: none)."""
    trained = {"flip": meta.get("augment_flip") is True, "shift": meta.get("augment_shift", 0) > 0}
    return tuple(transform for transform, on in trained.items() if on)


def averaged_logits(model: nn.Module, pixels: Tensor, norm: Normalization,
                    views: Sequence[str]) -> tuple[Tensor, Tensor]:
    """(logits averaged over the `views`, plain logits), each float32 (B, classes), of uint8 images (B, H, W).

    As airbench weighs them: with "flip", the image and its mirror count half each; with "shift", that
    result counts half and the same of the image moved one pixel up-left and one down-right a quarter each
    (6 forward passes for both, 3 for shifts, 2 for flip)."""
    def logits_of(images: Tensor) -> Tensor:
        return model(norm.apply(images)).float()

    def mirrored(images: Tensor, logits: Tensor) -> Tensor:  # `logits`: those of `images`
        return 0.5 * logits + 0.5 * logits_of(images.flip(-1)) if "flip" in views else logits

    plain = logits_of(pixels)
    logits = mirrored(pixels, plain)
    if "shift" in views:
        moved = [translate(pixels, dy, dx) for dy, dx in TTA_SHIFTS]
        logits = 0.5 * logits + 0.25 * sum(mirrored(images, logits_of(images)) for images in moved)
    return logits, plain


@dataclass
class ModelOutputs:
    """What the model says about the test set; everything on the CPU."""

    loss: float  # mean cross-entropy of the unrotated test set (its test-time augmentation averaged, if on)
    probabilities: np.ndarray  # float32 (N, classes): softmax of the unrotated logits (the same)
    plain_accuracy: float  # accuracy of the unrotated test set without test-time augmentation
    rotation_accuracy: dict[float, float]  # angle in degrees -> accuracy on the test set rotated by it
    throughput: float  # images per second of the unrotated pass, after a warm-up batch
    features: np.ndarray  # float32 (n, D): penultimate features of the rows asked for
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # float32 (N,) cross-entropy
    reliability: dict[str, np.ndarray] = field(default_factory=dict)  # calibration_bins() of the unrotated pass

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)  # int64 (N,)


def batches(array: np.ndarray, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Slices of a host array, each moved to `device` only when its turn comes."""
    for start in range(0, len(array), batch_size):
        yield torch.from_numpy(array[start:start + batch_size]).to(device)


def _sync(device: torch.device) -> None:
    """Wait for the kernels queued on `device` (asynchronous on every accelerator: cuda, mps, xpu...)
    before reading the clock."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


@torch.inference_mode()
def run_model(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, norm: Normalization,
              rotations: list[float], feature_rows: np.ndarray, batch_size: int,
              device: torch.device, tta: Sequence[str] = ()) -> ModelOutputs:
    """Run `model` over uint8 images (N, H, W) with int64 labels (N,): unrotated (its logits averaged over
    the test-time augmentation views `tta`, see averaged_logits), then plain once per angle.

    One batch of inputs and activations exists at a time; what is kept is (N, classes)
    probabilities, one accuracy per angle and the (n, D) features of `feature_rows`.
    """
    model.eval()
    for x in batches(images[:batch_size], batch_size, device):
        model(norm.apply(x))  # warm-up: one-time allocations and kernel choice stay out of the timing
    _sync(device)
    start = time.perf_counter()
    loss_sum, plain_correct, probabilities, losses = 0.0, 0, [], []
    for x, y in zip(batches(images, batch_size, device), batches(labels, batch_size, device)):
        logits, plain = averaged_logits(model, x, norm, tta)  # (B, classes) each
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        losses.append(F.cross_entropy(logits, y, reduction="none").cpu())  # (B,): for the loss's interval
        plain_correct += (plain.argmax(1) == y).sum().item()
        probabilities.append(logits.softmax(1).cpu())
    _sync(device)
    throughput = len(images) / max(time.perf_counter() - start, 1e-9)

    rotation_accuracy = {}
    for degrees in rotations:
        correct = 0
        for x, y in zip(batches(images, batch_size, device), batches(labels, batch_size, device)):
            correct += (model(rotate(norm.apply(x), degrees, fill=norm.background)).argmax(1) == y).sum().item()
        rotation_accuracy[degrees] = correct / max(len(labels), 1)

    features = [model.forward_features(norm.apply(x)).float().flatten(1).cpu()
                for x in batches(images[feature_rows], batch_size, device)]
    return ModelOutputs(
        loss=loss_sum / max(len(labels), 1),
        probabilities=torch.cat(probabilities).numpy() if probabilities else np.zeros((0, 0), np.float32),
        plain_accuracy=plain_correct / max(len(labels), 1),
        rotation_accuracy=rotation_accuracy,
        throughput=throughput,
        features=torch.cat(features).numpy() if features else np.zeros((0, 0), np.float32),
        losses=torch.cat(losses).numpy() if losses else np.zeros(0, np.float32),
    )


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, classes: list[str], *,
             norm: Normalization, batch_size: int, device: torch.device, rotations: Sequence[float] = (),
             bins: int = 15, confusions: int = 5, feature_rows: np.ndarray | None = None,
             tta: Sequence[str] = ()) -> tuple[dict, dict, ModelOutputs]:
    """(headline metrics, details, per-image outputs) of `model` on uint8 images (N, H, W), int64 labels (N,).

    `tta` names the test-time augmentation views (tta_views) whose logits are averaged for the headline
    accuracy, loss and calibration; rotation robustness measures the plain model.

    The headline metrics are the few numbers `dvc exp show` compares; the details (rotation curve,
    per-class scores, top confusions) are nested dicts of scalars, comparable with
    `dvc metrics diff --targets <file>`. Only `throughput_images_per_s` depends on the machine.
    """
    rows = np.zeros(0, np.int64) if feature_rows is None else feature_rows
    outputs = run_model(model, images, labels, norm=norm, rotations=list(rotations), feature_rows=rows,
                        batch_size=batch_size, device=device, tta=tta)
    predictions = outputs.predictions
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=np.arange(len(classes)), zero_division=0)
    # A class with no test image has no recall (0 of 0), so no F1: undefined (null), not 0, and out of the
    # macro mean; details.json names such classes. Its precision is 0 if it was predicted (all wrongly), else null.
    present, predicted = support > 0, np.bincount(predictions, minlength=len(classes)) > 0
    reliability = calibration_bins(outputs.probabilities.max(1), predictions == labels, bins)
    outputs = replace(outputs, reliability=reliability)  # the evaluate stage saves them for the figure
    rotation_accuracy = {f"{degrees:g}": accuracy for degrees, accuracy in outputs.rotation_accuracy.items()}
    metrics = {
        "accuracy": float(np.mean(predictions == labels)),
        "loss": outputs.loss,
        "ece": expected_calibration_error(reliability),
        **({f"accuracy_rotated_{HEADLINE_ROTATION}": rotation_accuracy[str(HEADLINE_ROTATION)]}
           if str(HEADLINE_ROTATION) in rotation_accuracy else {}),
        "throughput_images_per_s": round(outputs.throughput, 1),  # machine-dependent, unlike the rest
    }
    details = {
        # The views averaged for accuracy, loss and ece: "none", "flip", "shift" or "flip+shift". A string, not
        # a list: DVC's plots read this file's one list of records ("rotation"), and a second list breaks them.
        "tta": "+".join(tta) or "none",
        "accuracy_without_tta": outputs.plain_accuracy,
        "num_images": len(labels),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "f1_macro": float(np.mean(f1[present])) if present.any() else None,  # over the classes in the test set
        # a string, not a list: DVC's plot of this file takes its first list of records (the rotation curve)
        "classes_absent_from_test": ", ".join(name for name, here in zip(classes, present) if not here),
        "rotation_accuracy": rotation_accuracy,  # for `dvc metrics diff`, which reads scalars
        "rotation": [{"degrees": degrees, "accuracy": accuracy}  # records: `dvc plots diff` draws the curve
                     for degrees, accuracy in outputs.rotation_accuracy.items()],
        "per_class": {name: {"precision": float(p) if here or said else None, "recall": float(r) if here else None,
                             "f1": float(f) if here else None}
                      for name, p, r, f, here, said in zip(classes, precision, recall, f1, present, predicted)},
        "confusions": top_confusions(confusion_matrix(labels, predictions, len(classes)), classes, confusions),
        "intervals": intervals(metrics, outputs, labels, bins),
    }
    return metrics, details, outputs


def intervals(metrics: dict, outputs: ModelOutputs, labels: np.ndarray, bins: int) -> dict[str, dict]:
    """95% intervals of the headline test metrics (not throughput, a property of the machine): Wilson's for
    the accuracies, a seeded percentile bootstrap over the test images for loss and ECE (pipeline/stats.py)."""
    n, correct = len(labels), outputs.predictions == labels
    loss, ece = bootstrap_loss_ece(outputs.losses, outputs.probabilities.max(1), correct, bins)
    bootstrap = f"percentile bootstrap, {BOOTSTRAP_ROUNDS} resamples, seed {BOOTSTRAP_SEED}"
    found = {"accuracy": wilson(int(correct.sum()), n).as_dict("wilson"),
             "loss": Interval(metrics["loss"], *loss).as_dict(bootstrap),
             "ece": Interval(metrics["ece"], *ece).as_dict(bootstrap)}
    for name in [key for key in metrics if key.startswith("accuracy_rotated_")]:
        found[name] = wilson(round(metrics[name] * n), n).as_dict("wilson")  # accuracy = count / n exactly
    return found


def first_conv_filters(model: nn.Module) -> np.ndarray | None:
    """Weights (out, in, kH, kW) of the first nn.Conv2d in `model`, or None if it has none."""
    conv = next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)
    return None if conv is None else conv.weight.detach().float().cpu().numpy()
