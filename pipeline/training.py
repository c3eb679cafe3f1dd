"""The one training loop every model uses.

Data lives on the device as uint8 tensors and is sliced into batches by a seeded permutation (no
per-sample Dataset/DataLoader); each epoch ends with a full validation pass, dvclive logging and a
copy of the weights if validation loss improved. The best weights are loaded back at the end.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from dvclive import Live
from scmrepo.exceptions import SCMError
from torch import nn
from tqdm import tqdm

from pipeline.config import TrainConfig
from pipeline.inference import Normalization, predict
from pipeline.runtime import UserError
from pipeline.transforms import random_angles, rotate

log = logging.getLogger(__name__)

OPTIMIZERS = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                             weight_decay=c.weight_decay),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum,
                                                     weight_decay=c.weight_decay),
}


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    train_time_s: float


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, split: dict[str, np.ndarray],
          config: TrainConfig, *, norm: Normalization, device: torch.device, seed: int,
          live_dir: str | os.PathLike, desc: str = "train") -> TrainResult:
    """Train `model` in place on rows split["train"], select by loss on split["val"].

    `images` uint8 (N, H, W) and `labels` int64 (N,) hold the whole dataset; `seed` fixes the
    batch order (weight init is seeded by the caller before building the model).
    """
    # ---- data on the device, once
    x_train, y_train, x_val, y_val = (
        torch.from_numpy(array[split[subset]]).to(device)
        for subset in ("train", "val") for array in (images, labels)
    )
    model.to(device)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    generator = torch.Generator().manual_seed(seed)  # batch order only, independent of the global RNG
    n = len(y_train)
    steps_per_epoch = math.ceil(n / config.batch_size)

    try:
        live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    except SCMError as err:  # dvclive reads the git HEAD, which a repository without commits lacks
        raise UserError(f"dvclive cannot read this git repository ({err}); commit once, then rerun") from None

    best = TrainResult(best_epoch=0, best_val_loss=math.inf, best_val_accuracy=0.0, train_time_s=0.0)
    best_state = None
    start_time = time.perf_counter()
    with (live, tqdm(total=config.epochs * steps_per_epoch, desc=desc, unit="batch", mininterval=1.0) as bar):
        for epoch in range(1, config.epochs + 1):
            # ---- one pass over the training rows in a fresh random order
            model.train()
            loss_sum = torch.zeros((), device=device)  # accumulated on the device: no sync per step
            correct = torch.zeros((), device=device, dtype=torch.long)
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, config.batch_size):
                batch = order[start:start + config.batch_size]
                targets = y_train[batch]
                inputs = norm.apply(x_train[batch])  # (B, 1, H, W)
                if config.augment_rotation:  # drawn only when on: runs without it keep their batch order
                    angles = random_angles(len(batch), config.augment_rotation, generator).to(device)
                    inputs = rotate(inputs, angles, fill=norm.background)
                logits = model(inputs)  # (B, classes)
                loss = F.cross_entropy(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(batch)
                correct += (logits.argmax(1) == targets).sum()
                bar.update()

            # ---- full validation pass
            val_logits = predict(model, x_val, norm, config.batch_size)
            metrics = {
                "train/loss": loss_sum.item() / n,
                "train/accuracy": correct.item() / n,
                "val/loss": F.cross_entropy(val_logits, y_val).item(),
                "val/accuracy": (val_logits.argmax(1) == y_val).float().mean().item(),
            }
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()
            bar.set_postfix(epoch=epoch, val_loss=f"{metrics['val/loss']:.4f}",
                            val_acc=f"{metrics['val/accuracy']:.4f}")

            # ---- keep the best weights by validation loss
            if metrics["val/loss"] < best.best_val_loss:
                best = TrainResult(epoch, metrics["val/loss"], metrics["val/accuracy"], 0.0)
                best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}

        best.train_time_s = time.perf_counter() - start_time
        live.summary["best"] = {"epoch": best.best_epoch, "val/loss": best.best_val_loss,
                                "val/accuracy": best.best_val_accuracy}
        live.summary["train_time_s"] = best.train_time_s

    if best_state is not None:
        model.load_state_dict(best_state)
    log.info("best epoch %d of %d: val loss %.4f, val accuracy %.4f (%.1f s)", best.best_epoch, config.epochs,
             best.best_val_loss, best.best_val_accuracy, best.train_time_s)
    return best
