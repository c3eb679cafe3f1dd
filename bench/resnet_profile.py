"""Where resnet's training and inference time goes, and what the profile suggests trying.

What: the notebook's resnet (params.yaml's section, 28x28 inputs, bf16 autocast as `precision: auto`
runs it on this CPU) at 1 thread, timed by the thread's CPU clock (`time.thread_time`), which a shared
machine barely moves (wall-clock figures under contention are not comparable run to run). Measured in
one run, variants interleaved, min of REPEATS:
- the bf16 and fp32 matmul peaks (2048 x 2048) by the same clock;
- a training step (forward, loss, backward, fused Adam step) at batch 64: bf16; bf16 with channels_last
  model and inputs; bf16 with torch.compile (the compile time, the first call, printed apart and
  counted against it: how many steps until it pays);
- the share of the step per operator (torch.profiler, self CPU time, bf16), which names what to try;
- inference (the validation pass and the evaluate stage run the same `model(norm.apply(x))` in eval
  mode) per image at batch 500 / 1000 / 2000, channels_last, and batch norm folded into the preceding
  convolution (torch.fx's `fuse`, eval mode only).

    python -m bench.resnet_profile [--repeats 5]

Goal: name what moves resnet's share of the bf16 peak (42-46% of the 2-thread wall clock in issue 14)
and keep only what the numbers support. Results: docs/recipes.md, bench/results/resnet_profile.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.optimization import fuse

from bench.common import project_params, save_results, versions
from bench.throughput import forward_macs
from pipeline.models import create_model

SHAPE = (1, 28, 28)


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Min thread CPU seconds of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def peak(dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    return 2 * 2048 ** 3 / cpu_seconds(lambda: torch.mm(a, b), repeats)


def training_step(model: nn.Module, batch: int, channels_last: bool) -> Callable[[], None]:
    """One bf16 training step of `model` on a fixed random batch, as pipeline.training takes it."""
    x = torch.randn(batch, *SHAPE)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def inference(model: nn.Module, batch: int, channels_last: bool) -> Callable[[], None]:
    x = torch.randn(batch, *SHAPE)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = project_params().models["resnet"]
    build = lambda: create_model("resnet", SHAPE, 10, **config.arch)  # noqa: E731
    torch.manual_seed(0)
    flops = 6 * forward_macs(build(), SHAPE)  # per training image; inference: a third of it
    print(f"{versions()}; 1 thread, thread CPU time, min of {args.repeats}")
    figures: dict[str, float] = {"train_mflop_per_image": flops / 1e6}
    figures["peak_bf16_gflops"] = peak(torch.bfloat16, args.repeats) / 1e9
    figures["peak_fp32_gflops"] = peak(torch.float32, args.repeats) / 1e9

    # ---- training step, batch 64: bf16, + channels_last, + compile (first call = compilation)
    steps = {"bf16": training_step(build(), 64, False), "bf16+channels_last": training_step(build(), 64, True)}
    compiled = build()
    compiled_step = training_step(torch.compile(compiled), 64, False)
    start = time.perf_counter()
    compiled_step()
    figures["compile_first_step_s"] = time.perf_counter() - start  # wall: compilation runs subprocesses
    steps["bf16+compile"] = compiled_step
    for name, step in steps.items():
        seconds = cpu_seconds(step, args.repeats)
        figures[f"train_{name}_ms"] = seconds * 1e3
        figures[f"train_{name}_share_of_bf16_peak"] = 64 * flops / seconds / 1e9 / figures["peak_bf16_gflops"]

    # ---- where a bf16 step's time goes
    step = steps["bf16"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = {e.key: e.self_cpu_time_total / total for e in events[:10]}
    figures.update({f"profile_{key}": share for key, share in top.items()})

    # ---- inference per image: batch, channels_last, batch norm folded into the convolutions
    for batch in (500, 1000, 2000):
        model = build().eval()
        seconds = cpu_seconds(inference(model, batch, False), args.repeats)
        figures[f"infer_b{batch}_us_per_image"] = seconds / batch * 1e6
    model = build().eval()
    figures["infer_b1000_channels_last_us_per_image"] = cpu_seconds(
        inference(copy.deepcopy(model), 1000, True), args.repeats) / 1000 * 1e6
    fused = fuse(copy.deepcopy(model))  # conv + batch norm -> one conv (eval mode)
    figures["infer_b1000_fused_bn_us_per_image"] = cpu_seconds(inference(fused, 1000, False), args.repeats) / 1000 * 1e6
    x = torch.randn(256, *SHAPE)
    with torch.inference_mode():
        figures["fused_bn_max_logit_difference_fp32"] = (fused(x) - model(x)).abs().max().item()

    base_step, base_infer = figures["train_bf16_ms"], figures["infer_b1000_us_per_image"]
    for key, value in figures.items():
        ratio = ""
        if key.startswith("train_") and key.endswith("_ms"):
            ratio = f"  ({base_step / value:.2f}x the bf16 step's speed)"
        elif key.startswith("infer_"):
            ratio = f"  ({base_infer / value:.2f}x batch 1000's speed)"
        print(f"{key:60s} {value:12.4f}{ratio}")
    steps_to_pay = figures["compile_first_step_s"] / max(
        (base_step - figures["train_bf16+compile_ms"]) / 1e3, 1e-9)
    print(f"compile pays for itself after {steps_to_pay:.0f} steps" if base_step > figures["train_bf16+compile_ms"]
          else "compile never pays: its steps are not faster")
    save_results("resnet_profile", figures)


if __name__ == "__main__":
    main()
