"""EURNN speed: our `eurnn` against torch_eunn 0.2.1 (the PyPI package the EURNN notebook imported), same run.

Measures one training step, forward + backward, of the recurrent part plus a linear readout from the
last step: hidden 256 (complex units), capacity 2, T = 784 pixels (input size 1), batch 100, fp32 on
CPU with 2 threads. The two implementations alternate, REPEATS times each, and the minimum time of
each is compared (the minimum is the least disturbed by other work on a shared machine).

torch_eunn is installed only in its own virtual environment, bench/.venv (git-ignored), with no
dependencies of its own (it needs torch, which this script already imported from the project's
environment, so both sides run on the same torch build). Create it once, then run:

    python -m venv bench/.venv && bench/.venv/bin/pip install --no-deps torch-eunn==0.2.1
    python -m bench.eurnn

torch_eunn 0.2.1 imports and runs unchanged against torch 2.13 (CPU); no shim is needed.

Goal: >= 10x. Results: docs/results.md.
"""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import save_results, versions
from pipeline.models import create_model

HIDDEN, CAPACITY, STEPS, BATCH, THREADS, REPEATS = 256, 2, 784, 100, 2, 3


def import_torch_eunn():
    """torch_eunn from bench/.venv's site-packages (appended last: it cannot shadow the project's torch)."""
    found = glob.glob(str(Path(__file__).parent / ".venv/lib/python*/site-packages"))
    sys.path.extend(found)
    try:
        import torch_eunn
    except ImportError:
        sys.exit("error: torch_eunn not found; create bench/.venv as this script's docstring says")
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
    print(f"{versions()}; hidden {HIDDEN}, capacity {CAPACITY}, T {STEPS}, "
          f"batch {BATCH}; forward+backward, min of {REPEATS}")
    for name, values in times.items():
        print(f"  {name:10s} {best[name]:7.3f} s   (all: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"  speed-up: {best['torch_eunn'] / best['ours']:.1f}x")
    save_results("eurnn", {"forward+backward step, ours, s": round(best["ours"], 3),
                           "forward+backward step, torch_eunn 0.2.1, s": round(best["torch_eunn"], 3),
                           "speed-up (goal >= 10)": round(best["torch_eunn"] / best["ours"], 1),
                           "shape": f"hidden {HIDDEN}, capacity {CAPACITY}, T {STEPS}, batch {BATCH}"})


if __name__ == "__main__":
    main()
