"""Loop overhead: the pipeline's training loop against a bare forward + backward + step, same run.

For each model, both sides train the same freshly seeded model with the optimizer and schedule of its
params.yaml section, for its params.yaml epochs, on the same batches (the same seeded permutation of the
same uint8 rows, normalised on the device the same way). The pipeline side is `pipeline.training.train`
as the train stage calls it: a validation pass, dvclive logging and the best-weights copy after every
epoch, and the resume checkpoint every `checkpoint_every_s` seconds (params.yaml). The bare side is only
the batch loop. A third side is the pipeline with a checkpoint after every epoch (`checkpoint_every_s:
0`). Sides alternate, REPEATS times each; the minimum epoch time of each side is compared (the least
disturbed by other work on a shared machine: this VM's speed drifts by 10-30% within a minute).

    python bench/loop_overhead.py [--models mlp lenet] [--epochs N] [--repeats 8] [--threads N]

Data: data/parsed/<dataset> and data/split/<dataset> from `dvc repro` (default mnist-5k: 3,600 train
and 400 validation rows). Goal: pipeline / bare <= 1.1x.

Last runs, reference machine (2 CPU cores, no other job; torch 2.13.0+cpu, 2 threads), defaults, two
runs seven minutes apart:
    mlp    20 epochs: pipeline 0.087 / 0.076 s, bare 0.075 / 0.071 s -> 1.162x / 1.072x;
           checkpoint every epoch 1.295x / 1.234x
    lenet   8 epochs: pipeline 0.387 / 0.353 s, bare 0.359 / 0.333 s -> 1.080x / 1.059x;
           checkpoint every epoch 1.039x / 1.082x
The goal (<= 1.1x) is met for lenet in both runs and for mlp in the second; the first run's mlp
minimum of the bare side (0.075 s) lies below its other seven runs (0.079-0.097 s).
Before (background writer thread, dvclive's next_step(), a checkpoint every epoch; same machine,
another day): mlp 1.289x, lenet 1.120x. What changed: dvclive's next_step() re-read every .tsv file and
fsynced a VS Code marker each epoch (~5 ms, now ~1 ms), and the checkpoint (~12 ms for mlp, a sixth of
its epoch) is no longer written every epoch. What is left for mlp (~4 ms an epoch, measured inside the
loop): the validation pass on 400 images (2.7 ms), dvclive (0.9 ms), the loss/accuracy bookkeeping.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.config import TrainConfig, load_params  # noqa: E402
from pipeline.data.parsed import ParsedDataset, load_parsed  # noqa: E402
from pipeline.data.split import load_split  # noqa: E402
from pipeline.device import resolve_device, seed_everything  # noqa: E402
from pipeline.inference import Normalization  # noqa: E402
from pipeline.models import create_model  # noqa: E402
from pipeline.training import OPTIMIZERS, SCHEDULES, Checkpointing, train  # noqa: E402


def pipeline_epoch(name: str, config: TrainConfig, data: ParsedDataset, split: dict[str, np.ndarray],
                   norm: Normalization, device: torch.device, seed: int, epochs: int, every_s: float) -> float:
    """Seconds per epoch of `train` as the train stage calls it, a checkpoint at most every `every_s` s."""
    with tempfile.TemporaryDirectory() as tmp:
        seed_everything(seed)
        model = create_model(name, data.image_shape, len(data.classes), **config.arch)
        result = train(model, data.images, data.labels, split, config, norm=norm, device=device, seed=seed,
                       live_dir=Path(tmp) / "live", desc=name, checkpoint=Checkpointing(Path(tmp) / "last.pt", "bench", every_s))
    return result.train_time_s / epochs


def bare_epochs(model, x, y, norm, config, seed: int, epochs: int) -> float:
    """Seconds per epoch of forward + loss + backward + optimizer and scheduler step, nothing else."""
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config)
    scheduler = SCHEDULES[config.schedule](optimizer, config, epochs * math.ceil(len(y) / config.batch_size))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for first in range(0, len(y), config.batch_size):
            batch = order[first:first + config.batch_size]
            loss = F.cross_entropy(model(norm.apply(x[batch])), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet"])
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the model's params.yaml epochs)")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params(ROOT / "params.yaml")
    device = resolve_device(params.device)
    data = load_parsed(ROOT / "data" / "parsed" / args.dataset)
    split = load_split(ROOT / "data" / "split" / args.dataset)
    norm = Normalization.fit(data.images[split["train"]])
    x = torch.from_numpy(data.images[split["train"]]).to(device)
    y = torch.from_numpy(data.labels[split["train"]]).to(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; {args.dataset}: "
          f"{len(y)} train rows; per model, min of {args.repeats} runs after a warm-up")

    for name in args.models:
        epochs = args.epochs or params.models[name].epochs
        config = params.models[name].model_copy(update={"epochs": epochs, "steps": None})
        times: dict[str, list[float]] = {"pipeline": [], "checkpoint every epoch": [], "bare": []}
        for repeat in range(args.repeats + 1):  # the first round is the warm-up, not counted
            ours = pipeline_epoch(name, config, data, split, norm, device, params.seed, epochs,
                                  params.checkpoint_every_s)
            every = pipeline_epoch(name, config, data, split, norm, device, params.seed, epochs, 0.0)
            seed_everything(params.seed)
            model = create_model(name, data.image_shape, len(data.classes), **config.arch).to(device)
            bare = bare_epochs(model, x, y, norm, config, params.seed, epochs)
            if repeat:
                for side, seconds in zip(times, (ours, every, bare)):
                    times[side].append(seconds)
        best = {side: min(runs) for side, runs in times.items()}
        every = best["checkpoint every epoch"]
        print(f"{name:6s} {epochs} epochs; per epoch: pipeline {best['pipeline']:.3f} s, bare {best['bare']:.3f} s -> "
              f"{best['pipeline'] / best['bare']:.3f}x; checkpoint every epoch {every:.3f} s -> "
              f"{every / best['bare']:.3f}x  (all: "
              + "; ".join(f"{side} {', '.join(f'{t:.3f}' for t in runs)}" for side, runs in times.items()) + ")")


if __name__ == "__main__":
    main()
