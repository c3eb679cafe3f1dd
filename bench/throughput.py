"""Training throughput against the hardware: achieved FLOP/s of the training loop over a matmul peak, same run.

Peak: the best of REPEATS float32 `torch.mm` of two SIZE x SIZE matrices (default threads), measured
before every model and taken as the maximum over the run, so a disturbed peak cannot flatter a model.
FLOPs per training image: the forward multiply-adds of every nn.Linear and nn.Conv2d, counted by forward
hooks from the shapes the layers actually see, x 2 (a multiply-add is two FLOPs) x 3 (the backward pass
costs about twice the forward: gradients of the inputs and of the weights). Batch norm, pooling,
activations, the loss and the optimizer are not counted: they are work too, but not the matmul-shaped
work the peak measures. Images/s: `pipeline.training.train` as the train stage calls it (params.yaml's
section of the model, mnist-5k; dvclive logging and the last-state checkpoint included), over a step
budget (`--steps`: default one epoch of mnist-5k for mlp and lenet, 40 steps for resnet), so the end-of-
epoch validation pass is in the time too; counted are the training images only. One warm-up run first
(oneDNN builds its kernels on first use), then the minimum time of REPEATS runs.

    python bench/throughput.py [--models mlp lenet resnet] [--repeats 3] [--threads N]

Data: data/parsed/mnist-5k and data/split/mnist-5k (from `dvc repro`).
Goal (issue 6) at the default batch sizes: mlp >= 60%, lenet >= 25%, resnet >= 40% of the peak.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.config import load_params  # noqa: E402
from pipeline.data.parsed import load_parsed  # noqa: E402
from pipeline.data.split import load_split  # noqa: E402
from pipeline.device import resolve_device, seed_everything  # noqa: E402
from pipeline.inference import Normalization  # noqa: E402
from pipeline.models import create_model  # noqa: E402
from pipeline.training import Checkpointing, train  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet", "resnet"])
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: see the header)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--size", type=int, default=2048, help="matrix side of the peak matmul")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params(ROOT / "params.yaml")
    device = resolve_device(params.device)
    data = load_parsed(ROOT / "data" / "parsed" / args.dataset)
    split = load_split(ROOT / "data" / "split" / args.dataset)
    norm = Normalization.fit(data.images[split["train"]])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; {args.dataset}: "
          f"{len(split['train'])} train rows; min of {args.repeats} runs after a warm-up")

    peak, rows = 0.0, []
    for name in args.models:
        peak = max(peak, matmul_peak(args.size, 2 * args.repeats))
        config = params.models[name]
        steps = args.steps or DEFAULT_STEPS.get(name) or math.ceil(len(split["train"]) / config.batch_size)
        config = config.model_copy(update={"epochs": None, "steps": steps})
        flops = 6 * forward_macs(create_model(name, data.image_shape, len(data.classes), **config.arch),
                                 data.image_shape)
        epochs, rest = divmod(steps, math.ceil(len(split["train"]) / config.batch_size))
        images = epochs * len(split["train"]) + rest * config.batch_size  # an epoch's last batch may be short
        times = []
        for _ in range(args.repeats + 1):  # the first is the warm-up
            with tempfile.TemporaryDirectory() as tmp:
                seed_everything(params.seed)
                model = create_model(name, data.image_shape, len(data.classes), **config.arch)
                result = train(model, data.images, data.labels, split, config, norm=norm, device=device,
                               seed=params.seed, live_dir=Path(tmp) / "live", desc=name,
                               checkpoint=Checkpointing(Path(tmp) / "last.pt", "bench"))
                times.append(result.train_time_s)
        rate = images / min(times[1:])
        rows.append((name, config.batch_size, flops, rate))
        print(f"{name:6s} batch {config.batch_size:4d}: {flops / 1e6:8.2f} MFLOP/image, {rate:8.0f} images/s "
              f"-> {rate * flops / 1e9:6.1f} GFLOP/s (runs: {', '.join(f'{t:.2f}' for t in times[1:])} s)",
              flush=True)
    print(f"float32 matmul peak ({args.size}x{args.size}): {peak / 1e9:.1f} GFLOP/s")
    for name, batch, flops, rate in rows:
        print(f"{name:6s} batch {batch:4d}: {rate * flops / peak:6.1%} of peak")


if __name__ == "__main__":
    main()
