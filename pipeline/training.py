"""The one training loop every model uses.

Data lives on the device as uint8 tensors and is sliced into batches by a seeded permutation (no
per-sample Dataset/DataLoader). `Training` holds what a run is given (data, settings, budget) and its
`TrainState` (pipeline/resume.py: what changes, saved and restored as one); `Training.train_epoch` is one
pass over the training rows. Each epoch ends with a full validation pass, dvclive logging, a copy of the
weights if validation loss improved and, at most every `Checkpointing.every_s` seconds, a last-state
checkpoint that a rerun of the same settings resumes from. `train` runs every epoch and loads the best
weights back; `Training.epochs` yields after each, for a caller that looks at the weights as they train.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from dvclive import Live
from scmrepo.exceptions import SCMError
from torch import Tensor, nn
from tqdm import tqdm

from pipeline.averaging import WeightAverage
from pipeline.config import TrainConfig
from pipeline.distributed import SINGLE, World
from pipeline.inference import Normalization, predict
from pipeline.resume import Checkpointing, TrainState, load_checkpoint
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

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # layers that cannot train on a batch of one

SCHEDULES = {  # lr factor over the run, stepped once per optimizer step
    "constant": lambda optimizer, c, total: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
    "cosine": lambda optimizer, c, total: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total),
    # cycle_momentum=False: the momentum stays what params.yaml says
    "onecycle": lambda optimizer, c, total: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=c.lr, total_steps=total, cycle_momentum=False),
}


@dataclass(frozen=True)
class TrainResult:
    """How a run went: its best epoch by validation loss and its training time."""

    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    train_time_s: float


def batch_bounds(rows: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch over `rows` rows: `batch_size` rows each but the last,
    except that a last batch of one row joins the one before (with batch_size > 1). Batch norm cannot
    normalise a single image in training mode (resnet's head would fail after a whole epoch), and the row
    still trains."""
    starts = list(range(0, rows, batch_size))
    if batch_size > 1 and len(starts) > 1 and rows - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], rows]))


def _weighted_mean(batch_means: list[torch.Tensor], sizes: list[int]) -> float:
    """Mean over all rows of per-batch means, batch i holding sizes[i] rows."""
    weights = torch.tensor(sizes, dtype=torch.float32, device=batch_means[0].device)
    return (torch.stack(batch_means).float() @ weights).item() / sum(sizes)


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


class Training:
    """One run of `config` (its precision resolved: pipeline.device.for_device) on `device`: rows
    split["train"] train `model` in place, split["val"] select its weights by validation loss.

    `images` uint8 (N, H, W) and `labels` int64 (N,) hold the whole dataset; `seed` fixes the batch
    order (weight init is seeded by the caller before building the model). With `checkpoint`, a matching
    saved state is resumed from, and the state is saved after an epoch once `checkpoint.every_s`
    seconds have passed since the last save.

    With a `world` of several processes (pipeline.distributed), each rank trains on its contiguous share of
    every global batch of the one permutation (gradients averaged by DistributedDataParallel), validates its
    share of the validation set, and the statistics are summed over the ranks; the writer alone logs and saves."""

    def __init__(self, model: nn.Module, images: np.ndarray, labels: np.ndarray, split: dict[str, np.ndarray],
                 config: TrainConfig, *, norm: Normalization, device: torch.device, seed: int,
                 checkpoint: Checkpointing | None = None, world: World = SINGLE) -> None:
        if config.precision not in ("fp32", "tf32", "bf16"):
            raise ValueError(f"precision {config.precision!r}: resolve it first (pipeline.device.for_device)")
        if config.augment_flip == "auto":
            raise ValueError("augment_flip 'auto': resolve it first (TrainConfig.for_dataset)")
        self.x_train, self.y_train, self.x_val, self.y_val = (
            torch.from_numpy(array[split[subset]]).to(device)
            for subset in ("train", "val") for array in (images, labels)
        )
        model.to(device)
        self.world = world
        bounds = batch_bounds(len(split["train"]), config.batch_size)
        smallest = min(stop - start for start, stop in bounds)
        if smallest < world.size:  # a rank would get no image of it
            raise UserError(f"the last batch of each epoch holds {smallest} images, fewer than the {world.size} "
                            "training processes; change batch_size")
        forward = world.wrap(model, device)  # DistributedDataParallel at several processes
        self.forward = torch.compile(forward) if config.compile else forward
        # bf16: matmuls and convolutions under bfloat16 autocast (weights, optimizer state, loss and
        # normalisation stay float32); deterministic on one machine, but not bit-equal to fp32 or across
        # CPU kinds. fp32 runs are bit-exact.
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
        self.config, self.norm, self.checkpoint = config, norm, checkpoint
        if config.batch_size == 1 and any(isinstance(module, BATCH_NORMS) for module in model.modules()):
            raise UserError("batch_size 1: the model's batch norm needs at least 2 images a batch; raise batch_size")
        steps_per_epoch = len(bounds)
        self.total_steps = config.steps or config.epochs * steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / steps_per_epoch)
        optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
        self.state = TrainState(model, optimizer, SCHEDULES[config.schedule](optimizer, config, self.total_steps),
                                torch.Generator().manual_seed(seed), device,  # batch order, apart from the global RNG
                                average=WeightAverage(model, config.ema) if config.ema else None)
        # ---- resume from the last epoch of an interrupted run of these same settings, if one was saved
        # (the writer reads it: only its machine has it; every rank takes the same state and its own RNG)
        saved = checkpoint and world.from_writer(
            load_checkpoint(checkpoint.path, checkpoint.fingerprint) if world.writer else None)
        if saved:
            self.state.load(saved, world.rank)
            log.info("resuming from %s after epoch %d of %d", checkpoint.path, self.state.epoch, self.total_epochs)

    def train_epoch(self, bar: tqdm) -> tuple[dict[str, float], list[Tensor]]:
        """One pass over the training rows in a fresh random order (the last may stop at the step budget):
        the epoch's training loss and accuracy, and its batch losses."""
        state, config, norm, x_train, y_train = self.state, self.config, self.norm, self.x_train, self.y_train
        world = self.world
        state.model.train()
        # Per-step statistics stay on the device (no sync per step) and cost one op per step:
        # each batch's mean loss is kept, each prediction written into place; summed once an epoch.
        n = len(y_train)
        losses: list[Tensor] = []
        predicted = torch.empty(n, device=y_train.device, dtype=torch.long)  # (n,) in this epoch's order
        order = torch.randperm(n, generator=state.generator).to(y_train.device)
        seen = 0
        sizes: list[int] = []  # rows of each (global) batch taken
        shares: list[slice] = []  # this rank's rows of each batch, as positions in `order`
        for start, stop in batch_bounds(n, config.batch_size):
            if state.step == self.total_steps:
                break
            batch = order[start:stop]
            # Every rank draws the augmentations of the whole global batch (the generator stays in step on all
            # ranks, each image gets the draw it gets in one process), then keeps its share: the whole batch at 1.
            # Augmentations draw from the generator only when on: runs without them keep their batch order.
            pixels = x_train[batch]  # uint8 (B, H, W)
            if config.augment_shift:
                pixels = random_shift(pixels, config.augment_shift, state.generator)
            if config.augment_flip:
                pixels = random_flip(pixels, state.generator)
            mine = world.share(len(batch))
            targets, pixels = y_train[batch[mine]], pixels[mine]  # (b,), (b, H, W): b = B / world size
            inputs = norm.apply(pixels)  # (b, 1, H, W)
            if config.augment_rotation:
                angles = random_angles(len(batch), config.augment_rotation, state.generator)[mine].to(y_train.device)
                inputs = rotate(inputs, angles, fill=norm.background)
            with self.autocast:
                logits = self.forward(inputs)  # (b, classes)
                loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
            state.optimizer.zero_grad(set_to_none=True)
            if world.size > 1:  # DDP averages the ranks' gradients: weigh each share by its rows to get the batch mean's
                (loss * (len(targets) * world.size / len(batch))).backward()
            else:
                loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
            state.optimizer.step()
            state.scheduler.step()
            state.step += 1
            if state.average is not None:
                state.average.update(state.model, state.step)
            losses.append(loss.detach())
            torch.argmax(logits.detach(), 1, out=predicted[seen:seen + len(targets)])
            seen += len(targets)
            sizes.append(stop - start)
            shares.append(slice(start + mine.start, start + mine.stop))
            bar.update()
        # ---- once an epoch: the statistics summed, one sync each
        if world.size == 1:
            return {
                "train/loss": _weighted_mean(losses, sizes),
                "train/accuracy": (predicted[:seen] == y_train[order[:seen]]).float().mean().item(),
            }, losses
        return self._summed_statistics(losses, predicted[:seen], order, shares)

    def _summed_statistics(self, losses: list[Tensor], predicted: Tensor, order: Tensor,
                           shares: list[slice]) -> tuple[dict[str, float], list[Tensor]]:
        """train_epoch's statistics over all ranks: each step's loss summed over its rows on every rank, and the
        right predictions counted; returns them and the steps' global mean losses."""
        rows = torch.tensor([s.stop - s.start for s in shares], dtype=torch.float64, device=predicted.device)
        mine = torch.cat([order[s] for s in shares])  # this rank's rows, in the order it trained them
        sums = torch.cat([torch.stack(losses).double() * rows, rows,
                          (predicted == self.y_train[mine]).sum().double().reshape(1)])
        sums = self.world.sum(sums)  # (steps + steps + 1,): loss sums per step, rows per step, right predictions
        step_losses, step_rows, right = sums[:len(shares)], sums[len(shares):-1], sums[-1]
        return {"train/loss": (step_losses.sum() / step_rows.sum()).item(),
                "train/accuracy": (right / step_rows.sum()).item()}, list(step_losses / step_rows)

    def validate(self) -> dict[str, float]:
        """A full validation pass of the evaluated weights (the moving average, if on): loss and accuracy (each
        rank its share, summed, with several)."""
        world, batch = self.world, max(self.config.batch_size, VAL_BATCH)
        if world.size == 1:
            with self.autocast:
                logits = predict(self.state.evaluated, self.x_val, self.norm, batch)
            return {"val/loss": F.cross_entropy(logits, self.y_val).item(),
                    "val/accuracy": (logits.argmax(1) == self.y_val).float().mean().item()}
        mine = world.share(len(self.y_val))
        sums = torch.zeros(2, dtype=torch.float64, device=self.y_val.device)  # loss sum, right predictions
        if mine.stop > mine.start:
            with self.autocast:
                logits = predict(self.state.evaluated, self.x_val[mine], self.norm, batch)
            targets = self.y_val[mine]
            sums += torch.stack([F.cross_entropy(logits, targets, reduction="sum").double(),
                                 (logits.argmax(1) == targets).sum().double()])
        loss, right = world.sum(sums) / len(self.y_val)
        return {"val/loss": loss.item(), "val/accuracy": right.item()}

    def epochs(self, live_dir: str | os.PathLike, desc: str = "train") -> Iterator[int]:
        """Train the epochs left, yielding each one's number once it is logged to `live_dir` (and saved, if
        due) with `state.evaluated` holding its weights; after the last, the best evaluated weights are
        loaded into the model."""
        state, checkpoint, world = self.state, self.checkpoint, self.world
        live = None
        if world.writer:  # the other ranks log nothing, show no progress, write nothing
            try:
                live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
            except SCMError as err:  # dvclive reads the git HEAD, which a repository without commits lacks
                raise UserError(f"dvclive cannot read this git repository ({err}); commit once, then rerun") from None
            for done, metrics in enumerate(state.history):  # DVC deleted the killed run's dvclive files: write them again
                _log_epoch(live, done, metrics)
        started = time.perf_counter() - state.elapsed
        last_save = time.perf_counter()
        with live or nullcontext(), tqdm(total=self.total_steps, initial=state.step, desc=desc, unit="batch",
                                         mininterval=1.0, disable=not world.writer) as bar:
            for epoch in range(state.epoch + 1, self.total_epochs + 1):
                metrics, losses = self.train_epoch(bar)
                world.average_buffers(state.model)  # BatchNorm running statistics: the ranks' mean (CPU)
                metrics.update(self.validate())
                _stop_if_diverged(metrics, losses, epoch, state.step, desc)
                state.end_epoch(metrics)
                if live is not None:
                    _log_epoch(live, epoch - 1, metrics)
                bar.set_postfix(epoch=epoch, val_loss=f"{metrics['val/loss']:.4f}",
                                val_acc=f"{metrics['val/accuracy']:.4f}")
                # ---- last-state checkpoint: everything needed to go on as if never stopped. The writer's clock
                # decides for all ranks, which then gather their RNG states to it (collectives: every rank).
                if checkpoint and world.agree(time.perf_counter() - last_save >= checkpoint.every_s):
                    state.elapsed = time.perf_counter() - started
                    ranks = world.gather(state.rng_state())
                    if world.writer:
                        state.save(checkpoint.path, checkpoint.fingerprint, ranks)
                    last_save = time.perf_counter()
                yield epoch
            state.elapsed = time.perf_counter() - started
            # metrics.json, what `dvc exp show` lists: the best epoch, the precision used and the wall time (the
            # one number that depends on the machine), not the last epoch's values dvclive keeps (the .tsv
            # curves hold those). dvclive adds "step", the last epoch's index.
            if live is not None:
                live.summary = {"best_epoch": state.best_epoch, "precision": self.config.precision,
                                "train_time_s": state.elapsed}
        if state.best_weights is not None:
            state.model.load_state_dict(state.best_weights)
        result = self.result
        log.info("best epoch %d of %d: val loss %.4f, val accuracy %.4f (%.1f s)", result.best_epoch,
                 self.total_epochs, result.best_val_loss, result.best_val_accuracy, result.train_time_s)

    def run(self, live_dir: str | os.PathLike, desc: str = "train") -> TrainResult:
        """Every epoch left; the model ends holding the best epoch's weights."""
        for _ in self.epochs(live_dir, desc):
            pass
        return self.result

    @property
    def result(self) -> TrainResult:
        """The run so far: its best epoch and training time (as of the last epoch or save)."""
        best = self.state.history[self.state.best_epoch - 1] if self.state.history else {}
        return TrainResult(self.state.best_epoch, best.get("val/loss", math.inf),
                           best.get("val/accuracy", 0.0), self.state.elapsed)


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, split: dict[str, np.ndarray],
          config: TrainConfig, *, norm: Normalization, device: torch.device, seed: int,
          live_dir: str | os.PathLike, desc: str = "train", checkpoint: Checkpointing | None = None,
          world: World = SINGLE) -> TrainResult:
    """Train `model` in place, every epoch of `config`'s budget (see Training), and leave it holding the
    best epoch's weights: what the train stage runs."""
    return Training(model, images, labels, split, config, norm=norm, device=device, seed=seed,
                    checkpoint=checkpoint, world=world).run(live_dir, desc)
