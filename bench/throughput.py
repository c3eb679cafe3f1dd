"""Training throughput against the hardware: achieved FLOP/s of the training loop over the matmul peak of
the precision it trains in, both peaks measured in the same run.

Peaks: the best of REPEATS `torch.mm` of two SIZE x SIZE matrices in float32 and in bfloat16 (default
threads), measured before every model and taken as the maximum over the run, so a disturbed peak cannot
flatter a model. FLOPs per training image: the forward multiply-adds of every nn.Linear and nn.Conv2d,
counted by forward hooks from the shapes the layers actually see, x 2 (a multiply-add is two FLOPs) x 3
(the backward pass costs about twice the forward). Batch norm, pooling, activations, the loss and the
optimizer are not counted: they are work too, but not the matmul-shaped work the peak measures.
Images/s: `pipeline.training.train` as the train stage calls it (params.yaml's section of the model,
mnist-5k; dvclive logging and the resume checkpoint as `checkpoint_every_s` schedules it), over a step
budget (`--steps`: default one epoch of mnist-5k for mlp and lenet, 40 steps for resnet), so the
end-of-epoch validation pass is in the time too; counted are the training images only. One warm-up run
first (oneDNN builds its kernels on first use; torch.compile compiles), then the minimum time of REPEATS
runs; the warm-up's time is printed too ("first"), which for `compile` holds the compilation.

    python -m bench.throughput [--models mlp lenet resnet] [--variants default bf16 bf16+channels_last ...]
                               [--repeats 3] [--steps N]

A variant is `default` (params.yaml as is) or options joined by `+`, applied over params.yaml:
`fp32` / `bf16` (the precision), `channels_last` (model and inputs in NHWC memory format), `compile`
(torch.compile), `bN` (batch size N; the step budget scales so the same images are seen). Variants of a
model alternate run by run, so they share the machine's state.

Data: data/parsed/mnist-5k and data/split/mnist-5k (from `dvc repro`). Goals (issue 14): resnet >= 35%
of the bf16 peak; lenet >= 2x and mlp >= 1.5x the images/s of the loop before issue 14.
Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.common import (Workload, load_workload, project_params, save_results, seeded_model, train_as_stage,
                          versions)
from pipeline.config import TrainConfig
from pipeline.device import for_device, native_bf16, resolve_device
from pipeline.models import create_model

DEFAULT_STEPS = {"resnet": 40}  # resnet: ~0.5 s per step on 2 cores; the others run one full epoch


def matmul_peak(size: int, repeats: int, dtype: torch.dtype) -> float:
    """Best FLOP/s of a (size, size) @ (size, size) product in `dtype` over `repeats` tries."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
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


OPTIONS = ("fp32", "bf16", "channels_last", "compile")  # and bN: batch size N


def apply_variant(variant: str, config: TrainConfig) -> tuple[TrainConfig, bool]:
    """params.yaml's section with `variant`'s options applied; and whether the model goes channels-last."""
    if variant == "default":
        return config, False
    update: dict[str, Any] = {}
    options = variant.split("+")
    for option in options:
        if option in ("fp32", "bf16"):
            update["precision"] = option
        elif option == "compile":
            update["compile"] = True
        elif option.startswith("b") and option[1:].isdigit() and int(option[1:]) > 0:
            update["batch_size"] = int(option[1:])
        elif option != "channels_last":
            raise SystemExit(f"error: variant {variant!r}: unknown option {option!r}; valid: default, or "
                             f"{', '.join(OPTIONS)}, bN joined by +")
    return config.model_copy(update=update), "channels_last" in options


def train_seconds(name: str, config: TrainConfig, channels_last: bool, work: Workload, device: torch.device,
                  seed: int, checkpoint_every_s: float) -> float:
    """Seconds `train` takes (its own clock) for model `name` with `config`."""
    data = work.data
    model = seeded_model(name, config, data.image_shape, len(data.classes), seed)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_as_stage(model, data.images, data.labels, work.split, config, work.norm, device, seed,
                                Path(tmp), checkpoint_every_s, name)
    return result.train_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet", "resnet"])
    parser.add_argument("--variants", nargs="+", default=["default"],
                        help="default, or options joined by +: fp32, bf16, channels_last, compile, bN (batch N)")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--steps", type=int, help="optimizer steps per run at the default batch size (see the header)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048, help="matrix side of the peak matmuls")
    args = parser.parse_args()

    params = project_params()
    device = resolve_device(params.device)
    work = load_workload(args.dataset)
    data, n = work.data, work.n_train
    print(f"{versions()}, device {device} (native bf16: "
          f"{native_bf16(device)}); {args.dataset}: {n} train rows; per model and variant, min of "
          f"{args.repeats} runs after a warm-up")

    peaks = {"fp32": 0.0, "bf16": 0.0}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    def measure_peaks() -> None:
        for precision, dtype in dtypes.items():
            peaks[precision] = max(peaks[precision], matmul_peak(args.size, 2 * args.repeats, dtype))

    rows = []
    for name in args.models:
        measure_peaks()
        base = params.models[name].on(data.name)
        default_steps = args.steps or DEFAULT_STEPS.get(name) or math.ceil(n / base.batch_size)
        runs: dict[str, tuple[TrainConfig, bool, int, float]] = {}
        for variant in args.variants:
            config, channels_last = apply_variant(variant, base)
            images = default_steps * base.batch_size  # the same images for every batch size
            steps = math.ceil(images / config.batch_size)
            epochs, rest = divmod(steps, math.ceil(n / config.batch_size))
            images = epochs * n + rest * config.batch_size  # an epoch's last batch may be short
            config = for_device(config.model_copy(update={"epochs": None, "steps": steps}),
                                device).for_dataset(data.keeps_label, data.name)
            flops = 6 * forward_macs(create_model(name, data.image_shape, len(data.classes), **config.arch),
                                     data.image_shape)
            runs[variant] = (config, channels_last, images, flops)
        times: dict[str, list[float]] = {variant: [] for variant in args.variants}
        for _ in range(args.repeats + 1):  # variants alternate; the first round is the warm-up
            for variant, (config, channels_last, _, _) in runs.items():
                times[variant].append(train_seconds(name, config, channels_last, work, device, params.seed,
                                                    params.checkpoint_every_s))
        for variant, (config, _, images, flops) in runs.items():
            first, rest = times[variant][0], times[variant][1:]
            rate = images / min(rest)
            precision = config.precision
            rows.append((name, variant, config.batch_size, precision, rate, rate * flops))
            print(f"{name:6s} {variant:28s} batch {config.batch_size:3d} {precision}: {flops / 1e6:7.2f} "
                  f"MFLOP/image, {rate:7.0f} images/s -> {rate * flops / 1e9:6.1f} GFLOP/s (first {first:.2f} s, "
                  f"then {', '.join(f'{t:.3f}' for t in rest)} s)", flush=True)
    measure_peaks()
    print(", ".join(f"{precision} matmul peak {peak / 1e9:.1f} GFLOP/s" for precision, peak in peaks.items())
          + f" ({args.size}x{args.size}, best of the run)")
    figures: dict[str, Any] = {f"{precision} matmul peak, GFLOP/s": round(peak / 1e9, 1)
                               for precision, peak in peaks.items()}
    for name, variant, batch, precision, rate, achieved in rows:
        print(f"{name:6s} {variant:28s} batch {batch:3d}: {rate:7.0f} images/s, "
              f"{achieved / peaks[precision]:6.1%} of the {precision} peak")
        figures[f"{name} {variant}"] = {"batch": batch, "precision": precision, "images/s": round(rate),
                                        "GFLOP/s": round(achieved / 1e9, 1),
                                        "share of its precision's peak": round(achieved / peaks[precision], 3)}
    save_results("throughput", figures)


if __name__ == "__main__":
    main()
