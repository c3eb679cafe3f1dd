"""Training throughput against the hardware: achieved FLOP/s of the training loop over a matmul peak, same run.

Peak: the best of REPEATS float32 `torch.mm` of two SIZE x SIZE matrices (default threads), measured
before every model and taken as the maximum over the run, so a disturbed peak cannot flatter a model.
FLOPs per training image: the forward multiply-adds of every nn.Linear and nn.Conv2d, counted by forward
hooks from the shapes the layers actually see, x 2 (a multiply-add is two FLOPs) x 3 (the backward pass
costs about twice the forward: gradients of the inputs and of the weights). Batch norm, pooling,
activations, the loss and the optimizer are not counted: they are work too, but not the matmul-shaped
work the peak measures. Images/s: `pipeline.training.train` as the train stage calls it (params.yaml's
section of the model, mnist-5k; dvclive logging and the resume checkpoint as `checkpoint_every_s` schedules it), over a step
budget (`--steps`: default one epoch of mnist-5k for mlp and lenet, 40 steps for resnet), so the end-of-
epoch validation pass is in the time too; counted are the training images only. One warm-up run first
(oneDNN builds its kernels on first use), then the minimum time of REPEATS runs.

    python bench/throughput.py [--models mlp lenet resnet] [--variants default channels_last compile 1-thread foreach]
                               [--repeats 3] [--steps N]

Variants (options tried; each is measured against `default` in the same run, runs interleaved):
`channels_last` (the model in NHWC memory format), `compile` (torch.compile), `1-thread`, `foreach`
(the optimizer update before it was fused).

Data: data/parsed/mnist-5k and data/split/mnist-5k (from `dvc repro`).
Goal (issue 6) at the default batch sizes: mlp >= 60%, lenet >= 25%, resnet >= 40% of the peak.

Runs on the reference machine (2 CPU cores; torch 2.13.0+cpu, 2 threads):
  idle window, --models mlp lenet --variants default foreach   (peak 254.3 GFLOP/s)
    mlp    default 17.6% (36,788 images/s), foreach 18.2%
    lenet  default  6.1% ( 9,129 images/s), foreach  5.4%
other jobs keeping ~50% of the cores busy (contention lowers every figure):
  --models mlp lenet --variants default foreach 1-thread channels_last   (peak 240.7 GFLOP/s)
    mlp    default 20.9%, foreach 16.8%, 1-thread 15.7%, channels_last 19.4%   (default: 41,277 images/s)
    lenet  default  5.7%, foreach  5.4%, 1-thread  4.5%, channels_last  4.3%   (default:  8,099 images/s)
  --models resnet --variants default channels_last foreach --steps 20 --repeats 2  (heavily contended:
  peak 96.8 GFLOP/s instead of ~250)
    resnet default 30.0%, channels_last 32.0%, foreach 28.2%
otherwise idle machine, after merging: `python bench/throughput.py --variants default channels_last`
  (peak 264.9 GFLOP/s; min of 3 runs after a warm-up)
    mlp    default 19.2% (41,809 images/s), channels_last 20.2%
    lenet  default  6.3% ( 9,816 images/s), channels_last  6.5%
    resnet default 49.5% (   176 images/s), channels_last 48.2%
this session, `--variants default`, alternating with the code before it (background writer, checkpoint and
  dvclive next_step() every epoch) in one window of the otherwise idle machine, peak ~257 GFLOP/s:
    mlp    23.0% / 21.1%   (before: 19.3% / 16.2%)
    lenet   6.6% /  6.5%   (before:  6.5% /  6.2%)
    resnet 49.4%           (before: 47.5%)
  half an hour earlier, a slower window: mlp 14.3% / 15.1%, lenet 4.5% / 4.4%, resnet 37.9% / 40.3%
Goals: resnet >= 40%: met. mlp >= 60% and lenet >= 25%: NOT met; see the README's "Training speed"
for where the time goes and what was tried.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.config import TrainConfig, load_params  # noqa: E402
from pipeline.data.parsed import ParsedDataset, load_parsed  # noqa: E402
from pipeline.data.split import load_split  # noqa: E402
from pipeline.device import resolve_device, seed_everything  # noqa: E402
from pipeline.inference import Normalization  # noqa: E402
from pipeline.models import create_model  # noqa: E402
from pipeline.training import OPTIMIZERS, Checkpointing, train  # noqa: E402

DEFAULT_STEPS = {"resnet": 40}  # resnet: ~0.5 s per step on 2 cores; the others run one full epoch


def matmul_peak(size: int, repeats: int) -> float:
    """Best float32 FLOP/s of a (size, size) @ (size, size) product over `repeats` tries."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def forward_macs(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Multiply-adds of one image's forward pass through every nn.Linear and nn.Conv2d."""
    macs = 0

    def count(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(layer, nn.Linear):  # output (1, ..., out): each output element costs in_features
            macs += output.numel() * layer.in_features
        else:  # Conv2d, output (1, C_out, H', W'): each element costs C_in / groups * kh * kw
            macs += output.numel() * layer.in_channels // layer.groups * math.prod(layer.kernel_size)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *image_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return macs


VARIANTS = {  # what each option changes before `train` runs, so options are compared in one run
    "default": "as the train stage runs",
    "channels_last": "the model's conv weights in channels-last (NHWC) memory format",
    "compile": "torch.compile (the `compile: true` param); every run compiles anew, as a train stage does",
    "1-thread": "torch.set_num_threads(1)",
    "foreach": "the optimizers' multi-tensor (foreach) update instead of the fused one (the loop before fused=True)",
}


def _foreach(make: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """The pipeline's optimizer `make` builds, switched to its multi-tensor (foreach) update before any step."""
    def build(params: Any, config: TrainConfig) -> torch.optim.Optimizer:
        optimizer = make(params, config)
        for group in optimizer.param_groups:
            group.update(fused=False, foreach=True)
        return optimizer
    return build


FOREACH = {name: _foreach(make) for name, make in OPTIMIZERS.items()}


def train_seconds(name: str, variant: str, config: TrainConfig, data: ParsedDataset,
                  split: dict[str, np.ndarray], norm: Normalization, device: torch.device, seed: int,
                  checkpoint_every_s: float) -> float:
    """Seconds `train` takes (its own clock) for model `name` with option `variant` applied."""
    threads = torch.get_num_threads()
    if variant == "1-thread":
        torch.set_num_threads(1)
    if variant == "compile":
        config = config.model_copy(update={"compile": True})
    seed_everything(seed)
    model = create_model(name, data.image_shape, len(data.classes), **config.arch)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    try:
        with tempfile.TemporaryDirectory() as tmp, patch.dict(OPTIMIZERS, FOREACH if variant == "foreach" else {}):
            result = train(model, data.images, data.labels, split, config, norm=norm, device=device, seed=seed,
                           live_dir=Path(tmp) / "live", desc=f"{name} {variant}",
                           checkpoint=Checkpointing(Path(tmp) / "last.pt", "bench", checkpoint_every_s))
    finally:
        torch.set_num_threads(threads)
    return result.train_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet", "resnet"])
    parser.add_argument("--variants", nargs="+", default=["default"], choices=VARIANTS,
                        help="; ".join(f"{name}: {what}" for name, what in VARIANTS.items()))
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: see the header)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048, help="matrix side of the peak matmul")
    args = parser.parse_args()

    params = load_params(ROOT / "params.yaml")
    device = resolve_device(params.device)
    data = load_parsed(ROOT / "data" / "parsed" / args.dataset)
    split = load_split(ROOT / "data" / "split" / args.dataset)
    norm = Normalization.fit(data.images[split["train"]])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; {args.dataset}: "
          f"{len(split['train'])} train rows; per model and variant, min of {args.repeats} runs after a warm-up")

    peak, rows = 0.0, []
    for name in args.models:
        peak = max(peak, matmul_peak(args.size, 2 * args.repeats))
        config = params.models[name]
        steps = args.steps or DEFAULT_STEPS.get(name) or math.ceil(len(split["train"]) / config.batch_size)
        config = config.model_copy(update={"epochs": None, "steps": steps})
        epochs, rest = divmod(steps, math.ceil(len(split["train"]) / config.batch_size))
        images = epochs * len(split["train"]) + rest * config.batch_size  # an epoch's last batch may be short
        flops = 6 * forward_macs(create_model(name, data.image_shape, len(data.classes), **config.arch),
                                 data.image_shape)
        times: dict[str, list[float]] = {variant: [] for variant in args.variants}
        for repeat in range(args.repeats + 1):  # variants alternate; the first round is the warm-up
            for variant in args.variants:
                seconds = train_seconds(name, variant, config, data, split, norm, device, params.seed,
                                        params.checkpoint_every_s)
                if repeat:
                    times[variant].append(seconds)
        for variant, runs in times.items():
            rate = images / min(runs)
            rows.append((name, variant, config.batch_size, rate * flops))
            print(f"{name:6s} {variant:13s} batch {config.batch_size:3d}: {flops / 1e6:7.2f} MFLOP/image, "
                  f"{rate:7.0f} images/s -> {rate * flops / 1e9:6.1f} GFLOP/s "
                  f"(runs: {', '.join(f'{t:.3f}' for t in runs)} s)", flush=True)
    peak = max(peak, matmul_peak(args.size, 2 * args.repeats))
    print(f"float32 matmul peak ({args.size}x{args.size}, best of the run): {peak / 1e9:.1f} GFLOP/s")
    for name, variant, batch, achieved in rows:
        print(f"{name:6s} {variant:13s} batch {batch:3d}: {achieved / peak:6.1%} of peak")


if __name__ == "__main__":
    main()
