"""Loop overhead: the pipeline's training loop against a bare forward + backward + step, same run.

For each model, both sides train the same freshly seeded model with the optimizer and schedule of its
params.yaml section, for its params.yaml epochs, on the same batches (the same seeded permutation of the
same uint8 rows, normalised on the device the same way). The pipeline side is `pipeline.training.train`
as the train stage calls it: a validation pass, dvclive logging and the best-weights copy after every
epoch, and the resume checkpoint every `checkpoint_every_s` seconds (params.yaml). The bare side is only
the batch loop. A third side is the pipeline with a checkpoint after every epoch (`checkpoint_every_s:
0`). Sides alternate, REPEATS times each; the minimum epoch time of each side is compared (the least
disturbed by other work on a shared machine: this VM's speed drifts by 10-30% within a minute).

    python -m bench.loop_overhead [--models mlp lenet] [--epochs N] [--repeats 8] [--threads N]

Data: data/parsed/<dataset> and data/split/<dataset> from `dvc repro` (default mnist-5k: 3,600 train
and 400 validation rows). Goal: pipeline / bare <= 1.1x.

Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import (Workload, load_workload, project_params, save_results, seeded_model, train_as_stage,
                          versions)
from pipeline.config import TrainConfig
from pipeline.device import for_device, resolve_device
from pipeline.training import OPTIMIZERS, SCHEDULES


def pipeline_epoch(name: str, config: TrainConfig, work: Workload, device: torch.device, seed: int, epochs: int,
                   every_s: float) -> float:
    """Seconds per epoch of `train` as the train stage calls it, a checkpoint at most every `every_s` s."""
    data = work.data
    with tempfile.TemporaryDirectory() as tmp:
        model = seeded_model(name, config, data.image_shape, len(data.classes), seed)
        result = train_as_stage(model, data.images, data.labels, work.split, config, work.norm, device, seed,
                                Path(tmp), every_s, name)
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

    params = project_params()
    device = resolve_device(params.device)
    work = load_workload(args.dataset)
    data, norm = work.data, work.norm
    x = torch.from_numpy(data.images[work.split["train"]]).to(device)
    y = torch.from_numpy(data.labels[work.split["train"]]).to(device)
    print(f"{versions()}, device {device}; {args.dataset}: "
          f"{len(y)} train rows; per model, min of {args.repeats} runs after a warm-up")

    figures = {}
    for name in args.models:
        epochs = args.epochs or params.models[name].epochs
        config = for_device(params.models[name].on(data.name).model_copy(update={"epochs": epochs, "steps": None}),
                            device).for_dataset(data.keeps_label, data.name)
        times: dict[str, list[float]] = {"pipeline": [], "checkpoint every epoch": [], "bare": []}
        for repeat in range(args.repeats + 1):  # the first round is the warm-up, not counted
            ours = pipeline_epoch(name, config, work, device, params.seed, epochs, params.checkpoint_every_s)
            every = pipeline_epoch(name, config, work, device, params.seed, epochs, 0.0)
            model = seeded_model(name, config, data.image_shape, len(data.classes), params.seed).to(device)
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
        figures[name] = {"epochs": epochs, "pipeline epoch, s": round(best["pipeline"], 4),
                         "bare epoch, s": round(best["bare"], 4),
                         "pipeline / bare (goal <= 1.1)": round(best["pipeline"] / best["bare"], 3),
                         "checkpoint every epoch / bare": round(every / best["bare"], 3)}
    save_results("loop_overhead", figures)


if __name__ == "__main__":
    main()
