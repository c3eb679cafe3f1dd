"""The one training loop every model uses.

Data lives on the device as uint8 tensors and is sliced into batches by a seeded permutation (no
per-sample Dataset/DataLoader); each epoch ends with a full validation pass, dvclive logging and a
copy of the weights if validation loss improved, and (optionally) a last-state checkpoint that a
rerun of the same settings resumes from, written at most every `Checkpointing.every_s` seconds. The
best weights are loaded back at the end.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dvclive import Live
from scmrepo.exceptions import SCMError
from torch import nn
from tqdm import tqdm

from pipeline.config import TrainConfig
from pipeline.device import native_bf16, resolve_precision
from pipeline.inference import Normalization, predict
from pipeline.resume import load_checkpoint, save_checkpoint
from pipeline.runtime import UserError
from pipeline.transforms import random_angles, random_flip, random_shift, rotate

log = logging.getLogger(__name__)

# fused=True: one kernel per parameter tensor for the whole update instead of a handful of foreach
# ops (2.5-3x faster steps for these small models; the same update up to float rounding). RMSprop has
# no fused kernel.
OPTIMIZERS = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                             weight_decay=c.weight_decay, fused=True),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay, fused=True),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, fused=True),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum,
                                                     weight_decay=c.weight_decay),
}


# Images per validation batch: inference keeps no activations for backward, so it takes larger batches
# than training (fewer, larger kernels); ~200 MB of activations per layer for resnet at 28x28.
VAL_BATCH = 1000

SCHEDULES = {  # lr factor over the run, stepped once per optimizer step
    "constant": lambda optimizer, c, total: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
    "cosine": lambda optimizer, c, total: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total),
    # cycle_momentum=False: the momentum stays what params.yaml says
    "onecycle": lambda optimizer, c, total: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=c.lr, total_steps=total, cycle_momentum=False),
}


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    train_time_s: float


@dataclass(frozen=True)
class Checkpointing:
    """Where the last-state checkpoint goes, the fingerprint of the run it belongs to, and how often.

    A checkpoint is written after an epoch once `every_s` seconds of training have passed since the
    last one (0: after every epoch), so a killed run loses at most that much work plus one epoch, and
    short epochs do not pay for a file write each (~12 ms for mlp: a sixth of its mnist-5k epoch)."""

    path: Path
    fingerprint: str
    every_s: float = 0.0


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "batches": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batches"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and buffers, unaffected by later training steps."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _weighted_mean(batch_means: list[torch.Tensor], batch_size: int, rows: int) -> float:
    """Mean over `rows` rows of per-batch means, batches of `batch_size` rows but the last (shorter)."""
    weights = torch.full((len(batch_means),), float(batch_size), device=batch_means[0].device)
    weights[-1] = rows - batch_size * (len(batch_means) - 1)
    return (torch.stack(batch_means).float() @ weights).item() / rows


def _stop_if_diverged(metrics: dict[str, float], losses: list[torch.Tensor], epoch: int, step: int,
                      desc: str) -> None:
    """Stop a run whose loss turned NaN or infinite with one line: epoch, step, value and what to change.
    Checked once an epoch on the summed loss, so it costs no device sync per step; only a diverged run
    looks for the first bad step among the epoch's batch losses."""
    if math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"]):
        return
    values = torch.stack(losses).float().cpu()
    bad = torch.nonzero(~torch.isfinite(values)).flatten()
    if len(bad):
        what, at, value = "training loss", step - len(losses) + int(bad[0]) + 1, values[bad[0]].item()
    else:
        what, at, value = "validation loss", step, metrics["val/loss"]
    raise UserError(f"{desc}: training diverged: the {what} became {value} at epoch {epoch}, step {at}; "
                    "lower the model's lr or set its grad_clip in params.yaml")


def _log_epoch(live: Live, step: int, metrics: dict[str, float]) -> None:
    """Append one epoch's metrics to dvclive's .tsv files at `step` (epoch - 1).

    Sets the step instead of calling live.next_step(), which re-reads every .tsv file (to prepare a DVC
    Studio update, even with Studio off) and fsyncs a marker file for the VS Code extension: ~5 ms an
    epoch, growing with the epoch count. metrics.json is written once, when `live` ends."""
    live.step = step
    for name, value in metrics.items():
        live.log_metric(name, value)


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, split: dict[str, np.ndarray],
          config: TrainConfig, *, norm: Normalization, device: torch.device, seed: int,
          live_dir: str | os.PathLike, desc: str = "train", checkpoint: Checkpointing | None = None,
          on_epoch: Callable[[int], None] | None = None) -> TrainResult:
    """Train `model` in place on rows split["train"], select by loss on split["val"].

    `images` uint8 (N, H, W) and `labels` int64 (N,) hold the whole dataset; `seed` fixes the
    batch order (weight init is seeded by the caller before building the model). With `checkpoint`,
    the full state is saved after an epoch once `checkpoint.every_s` seconds have passed since the last
    save, and a matching saved state is resumed from. `on_epoch(epoch)`, if given, is called at the end
    of each epoch (bench/ uses it to score the weights as training goes).
    """
    # ---- data on the device, once
    x_train, y_train, x_val, y_val = (
        torch.from_numpy(array[split[subset]]).to(device)
        for subset in ("train", "val") for array in (images, labels)
    )
    model.to(device)
    forward = torch.compile(model) if config.compile else model
    # bf16: matmuls and convolutions under bfloat16 autocast (weights, optimizer state, loss and
    # normalisation stay float32); deterministic on one machine, but not bit-equal to fp32 or across
    # CPU kinds. fp32 runs are bit-exact.
    precision = resolve_precision(config.precision, device)
    if precision == "bf16" and not native_bf16(device):
        log.warning("precision bf16 on %s, which has no native bf16: it runs emulated, slower than fp32", device)
    log.info("precision: %s (params: %s)", precision, config.precision)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    n = len(y_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    scheduler = SCHEDULES[config.schedule](optimizer, config, total_steps)
    generator = torch.Generator().manual_seed(seed)  # batch order only, independent of the global RNG

    try:
        live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    except SCMError as err:  # dvclive reads the git HEAD, which a repository without commits lacks
        raise UserError(f"dvclive cannot read this git repository ({err}); commit once, then rerun") from None

    # ---- resume from the last epoch of an interrupted run of these same settings, if one was saved
    best = TrainResult(best_epoch=0, best_val_loss=math.inf, best_val_accuracy=0.0, train_time_s=0.0)
    best_state, history, first_epoch, step, elapsed = None, [], 1, 0, 0.0
    saved = load_checkpoint(checkpoint.path, checkpoint.fingerprint) if checkpoint else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"], generator, device)
        best, best_state = TrainResult(**saved["best"]), saved["best_state"]
        history, first_epoch, step, elapsed = saved["history"], saved["epoch"] + 1, saved["step"], saved["elapsed"]
        log.info("resuming from %s after epoch %d of %d", checkpoint.path, saved["epoch"], epochs)
    for done, metrics in enumerate(history):  # DVC deleted the killed run's dvclive files: write them again
        _log_epoch(live, done, metrics)

    start_time = time.perf_counter() - elapsed
    last_checkpoint = time.perf_counter()
    with live, tqdm(total=total_steps, initial=step, desc=desc, unit="batch", mininterval=1.0) as bar:
        for epoch in range(first_epoch, epochs + 1):
            # ---- one pass over the training rows in a fresh random order (the last may stop at `steps`)
            model.train()
            # Per-step statistics stay on the device (no sync per step) and cost one op per step:
            # each batch's mean loss is kept, each prediction written into place; summed once an epoch.
            losses: list[torch.Tensor] = []
            predicted = torch.empty(n, device=device, dtype=torch.long)  # (n,) in this epoch's order
            order = torch.randperm(n, generator=generator).to(device)
            seen = 0
            for start in range(0, n, config.batch_size):
                if step == total_steps:
                    break
                batch = order[start:start + config.batch_size]
                targets = y_train[batch]
                # Augmentations draw from `generator` only when on: runs without them keep their batch order.
                pixels = x_train[batch]  # uint8 (B, H, W)
                if config.augment_shift:
                    pixels = random_shift(pixels, config.augment_shift, generator)
                if config.augment_flip:
                    pixels = random_flip(pixels, generator)
                inputs = norm.apply(pixels)  # (B, 1, H, W)
                if config.augment_rotation:
                    angles = random_angles(len(batch), config.augment_rotation, generator).to(device)
                    inputs = rotate(inputs, angles, fill=norm.background)
                with autocast:
                    logits = forward(inputs)  # (B, classes)
                    loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                losses.append(loss.detach())
                torch.argmax(logits.detach(), 1, out=predicted[seen:seen + len(batch)])
                seen += len(batch)
                bar.update()

            # ---- full validation pass
            with autocast:
                val_logits = predict(model, x_val, norm, max(config.batch_size, VAL_BATCH))
            metrics = {
                "train/loss": _weighted_mean(losses, config.batch_size, seen),
                "train/accuracy": (predicted[:seen] == y_train[order[:seen]]).float().mean().item(),
                "val/loss": F.cross_entropy(val_logits, y_val).item(),
                "val/accuracy": (val_logits.argmax(1) == y_val).float().mean().item(),
            }
            _stop_if_diverged(metrics, losses, epoch, step, desc)
            history.append(metrics)
            _log_epoch(live, epoch - 1, metrics)
            bar.set_postfix(epoch=epoch, val_loss=f"{metrics['val/loss']:.4f}",
                            val_acc=f"{metrics['val/accuracy']:.4f}")

            # ---- keep the best weights by validation loss
            if metrics["val/loss"] < best.best_val_loss:
                best = TrainResult(epoch, metrics["val/loss"], metrics["val/accuracy"], 0.0)
                best_state = _copy_state(model)

            # ---- last-state checkpoint: everything needed to go on as if never stopped
            if checkpoint and time.perf_counter() - last_checkpoint >= checkpoint.every_s:
                save_checkpoint(checkpoint.path, {
                    "fingerprint": checkpoint.fingerprint, "epoch": epoch, "step": step,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": _rng_state(generator, device),
                    "best": asdict(best), "best_state": best_state, "history": history,
                    "elapsed": time.perf_counter() - start_time,
                })
                last_checkpoint = time.perf_counter()
            if on_epoch:
                on_epoch(epoch)

        best.train_time_s = time.perf_counter() - start_time
        # metrics.json, what `dvc exp show` lists: the best epoch, the precision used and the wall time (the
        # one number that depends on the machine), not the last epoch's values dvclive keeps (the .tsv
        # curves hold those). dvclive adds "step", the last epoch's index.
        live.summary = {"best_epoch": best.best_epoch, "precision": precision, "train_time_s": best.train_time_s}

    if best_state is not None:
        model.load_state_dict(best_state)
    log.info("best epoch %d of %d: val loss %.4f, val accuracy %.4f (%.1f s)", best.best_epoch, epochs,
             best.best_val_loss, best.best_val_accuracy, best.train_time_s)
    return best
