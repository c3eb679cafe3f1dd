"""EURNN speed: our `eurnn` against torch_eunn 0.2.1 (the PyPI package seed 001 imported), same run.

Measures one training step, forward + backward, of the recurrent part plus a linear readout from the
last step: hidden 256 (complex units), capacity 2, T = 784 pixels (input size 1), batch 100, fp32 on
CPU with 2 threads. The two implementations alternate, REPEATS times each, and the minimum time of
each is compared (the minimum is the least disturbed by other work on a shared machine).

torch_eunn is installed only in its own virtual environment, bench/.venv (git-ignored), with no
dependencies of its own (it needs torch, which this script already imported from the project's
environment, so both sides run on the same torch build). Create it once, then run:

    python -m venv bench/.venv && bench/.venv/bin/pip install --no-deps torch-eunn==0.2.1
    python bench/eurnn.py

torch_eunn 0.2.1 imports and runs unchanged against torch 2.13 (CPU); no shim is needed.

Results, reference machine (2 CPU cores, no other job running; torch 2.13.0+cpu, 2 threads), three
runs a minute apart (the machine's speed drifts; torch_eunn's many small ops drift more):
    torch 2.13.0+cpu, 2 threads; hidden 256, capacity 2, T 784, batch 100; forward+backward, min of 3
      ours         0.693 s   (all: 1.220, 0.693, 0.752)
      torch_eunn   7.201 s   (all: 11.111, 7.201, 10.002)
      speed-up: 10.4x
    second run: ours 0.592 s, torch_eunn 6.932 s -> 11.7x; third (load ~1.5): 0.637 s, 9.333 s -> 14.7x
Goal >= 10x: met. The previous implementation (complex tensors, ~20 ops per step forward and ~50
backward, with a loop over layers inside each backward step) took 1.736 s against torch_eunn's
6.994 s on the idle machine: 4.0x. Contended runs inflate the ratio (an earlier one printed 15.6x for
that version): quote only runs on an otherwise idle machine.
"""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, when run as a script
from pipeline.models import create_model  # noqa: E402

HIDDEN, CAPACITY, STEPS, BATCH, THREADS, REPEATS = 256, 2, 784, 100, 2, 3


def import_torch_eunn():
    """torch_eunn from bench/.venv's site-packages (appended last: it cannot shadow the project's torch)."""
    found = glob.glob(str(Path(__file__).parent / ".venv/lib/python*/site-packages"))
    sys.path.extend(found)
    try:
        import torch_eunn
    except ImportError:
        sys.exit("torch_eunn not found; create bench/.venv as this script's docstring says")
    return torch_eunn


def time_step(forward, params, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one forward + backward pass."""
    for p in params:
        p.grad = None
    start = time.perf_counter()
    F.cross_entropy(forward(x), y).backward()
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    torch_eunn = import_torch_eunn()
    images = torch.rand(BATCH, 1, 28, 28)
    labels = torch.randint(0, 10, (BATCH,))

    ours = create_model("eurnn", (1, 28, 28), 10, hidden=HIDDEN, capacity=CAPACITY, permute=True)
    rnn = torch_eunn.EURNN(1, HIDDEN, capacity=CAPACITY, batch_first=True)
    readout = torch.nn.Linear(HIDDEN, 10)
    order = ours.sequence.order
    theirs = lambda x: readout(rnn(x.flatten(1)[:, order, None])[0][:, -1])  # (B, T, 1) -> last step -> logits

    times: dict[str, list[float]] = {"ours": [], "torch_eunn": []}
    for _ in range(REPEATS):
        times["ours"].append(time_step(ours, list(ours.parameters()), images, labels))
        times["torch_eunn"].append(time_step(theirs, [*rnn.parameters(), *readout.parameters()], images, labels))
    best = {name: min(values) for name, values in times.items()}
    print(f"torch {torch.__version__}, {THREADS} threads; hidden {HIDDEN}, capacity {CAPACITY}, T {STEPS}, "
          f"batch {BATCH}; forward+backward, min of {REPEATS}")
    for name, values in times.items():
        print(f"  {name:10s} {best[name]:7.3f} s   (all: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"  speed-up: {best['torch_eunn'] / best['ours']:.1f}x")


if __name__ == "__main__":
    main()
