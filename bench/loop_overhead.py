"""Loop overhead: the pipeline's training loop against a bare forward + backward + step, same run.

For each model, both sides train the same freshly seeded model with the optimizer and schedule of its
params.yaml section, on the same batches (the same seeded permutation of the same uint8 rows, normalised
on the device the same way). The pipeline side is `pipeline.training.train` as the train stage calls it:
a validation pass, dvclive logging, best-weights copy and the last-state checkpoint after every epoch.
The bare side is only the batch loop. Sides alternate, REPEATS times each; the minimum epoch time of
each side is compared (the least disturbed by other work on a shared machine).

    python bench/loop_overhead.py [--models mlp lenet] [--epochs 3] [--repeats 3] [--threads N]

Data: data/parsed/<dataset> and data/split/<dataset> from `dvc repro` (default mnist-5k: 3,600 train
and 400 validation rows). Goal: pipeline / bare <= 1.1x.

Runs on the reference machine (2 CPU cores; torch 2.13.0+cpu), defaults:
  before the background writer, otherwise idle, 2 threads:
    mlp    epoch: pipeline 0.146 s, bare 0.120 s -> 1.216x
    lenet  epoch: pipeline 0.552 s, bare 0.475 s -> 1.162x
  with it (dvclive and the checkpoint written while the next epoch trains), --threads 1, the machine
  ~50% busy with other jobs; two runs, alternating with two of the code before it:
    now:    mlp 1.164x, 1.053x    lenet 1.230x, 1.090x
    before: mlp 1.314x, 1.445x    lenet 1.009x, 1.373x
Too noisy to call; an idle run is still to be made (goal <= 1.1x).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.config import load_params  # noqa: E402
from pipeline.data.parsed import load_parsed  # noqa: E402
from pipeline.data.split import load_split  # noqa: E402
from pipeline.device import resolve_device, seed_everything  # noqa: E402
from pipeline.inference import Normalization  # noqa: E402
from pipeline.models import create_model  # noqa: E402
from pipeline.training import OPTIMIZERS, SCHEDULES, Checkpointing, train  # noqa: E402


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
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
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
          f"{len(y)} train rows; {args.epochs} epochs per run, min of {args.repeats} after a warm-up")

    for name in args.models:
        config = params.models[name].model_copy(update={"epochs": args.epochs, "steps": None})
        pipeline_times, bare_times = [], []
        for repeat in range(args.repeats + 1):  # the first round is the warm-up, not counted
            with tempfile.TemporaryDirectory() as tmp:
                seed_everything(params.seed)
                model = create_model(name, data.image_shape, len(data.classes), **config.arch)
                result = train(model, data.images, data.labels, split, config, norm=norm, device=device,
                               seed=params.seed, live_dir=Path(tmp) / "live", desc=name,
                               checkpoint=Checkpointing(Path(tmp) / "last.pt", "bench"))
            seed_everything(params.seed)
            model = create_model(name, data.image_shape, len(data.classes), **config.arch).to(device)
            bare = bare_epochs(model, x, y, norm, config, params.seed, args.epochs)
            if repeat:
                pipeline_times.append(result.train_time_s / args.epochs)
                bare_times.append(bare)
        ours, bare = min(pipeline_times), min(bare_times)
        print(f"{name:6s} epoch: pipeline {ours:.3f} s, bare {bare:.3f} s -> {ours / bare:.3f}x "
              f"(all pipeline: {', '.join(f'{t:.3f}' for t in pipeline_times)}; "
              f"bare: {', '.join(f'{t:.3f}' for t in bare_times)})")


if __name__ == "__main__":
    main()
