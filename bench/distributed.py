"""Data-parallel training on one CPU machine: is it worth starting several processes?

The train stage (`python -m src.train`, as `dvc repro` runs it) on mnist-5k at params.yaml's settings of
each model, the same global batch in every layout, a step budget (`--steps`), in three layouts:
  1x1  one process, one thread (the base of the efficiencies)
  1xT  one process, T threads (T = the cores: what the stage does at distributed.nproc_per_node 1)
  Nx1  N processes (distributed.nproc_per_node N = the cores), one thread each (what the stage sets)
Images/s: training images (steps x batch) over the training time the stage reports (metrics.json's
train_time_s: from the first step to the end of the last validation pass, without start-up), the best of
`--repeats` runs; layouts alternate run by run, so they share the machine's state.
Scaling efficiency of a layout using C cores: its images/s over C x the 1x1 images/s.

    python -m bench.distributed [--models lenet resnet] [--steps lenet=300 resnet=40] [--repeats 2]

Data: data/parsed/mnist-5k and data/split/mnist-5k (from `dvc repro`). Goal: the numbers behind
docs/scaling.md's advice (when to set nproc_per_node above 1 on a CPU machine). Results:
bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

from bench import ROOT
from bench.common import save_results, versions
from pipeline.distributed import cpu_cores

DATASET = "mnist-5k"
DEFAULT_STEPS = {"lenet": 300, "resnet": 40, "mlp": 600}


def run_stage(model: str, steps: int, processes: int, threads: int, tmp: Path) -> float:
    """Images/s of one train stage run of `model` in the layout processes x threads."""
    params = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    section = params["models"][model]
    section.update(epochs=None, steps=steps)
    params["distributed"]["nproc_per_node"] = processes
    params["checkpoint_every_s"] = 1e9  # no checkpoint inside the budget: the same work in every layout
    path = tmp / f"{model}-{processes}x{threads}.yaml"
    with open(path, "w") as f:
        YAML(typ="safe").dump(params, f)
    live = tmp / f"live-{model}-{processes}x{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-m", "src.train", "--model", model, "--parsed", f"data/parsed/{DATASET}",
         "--split", f"data/split/{DATASET}", "--out", str(tmp / f"{model}.pt"), "--live", str(live),
         "--params", str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"error: the train stage failed ({model}, {processes}x{threads}):\n{done.stderr[-2000:]}")
    seconds = json.loads((live / "metrics.json").read_text())["train_time_s"]
    return steps * section["batch_size"] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet", "resnet"])
    parser.add_argument("--steps", nargs="*", default=[], help="model=steps overrides, e.g. resnet=40")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    steps = {**DEFAULT_STEPS, **{k: int(v) for k, v in (item.split("=") for item in args.steps)}}
    cores = cpu_cores()
    layouts = [(1, 1), (1, cores), (cores, 1)]
    print(f"{versions()}; {cores} cores; the train stage on {DATASET}, same global batch in every layout")
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            best = {layout: 0.0 for layout in layouts}
            for _ in range(args.repeats):
                for layout in layouts:
                    best[layout] = max(best[layout], run_stage(model, steps[model], *layout, Path(folder)))
            base = best[(1, 1)]
            row = {f"{p}x{t}_images_per_s": round(ips, 1) for (p, t), ips in best.items()}
            row.update({f"{p}x{t}_efficiency": round(best[(p, t)] / (p * t * base), 3) for p, t in layouts[1:]})
            row[f"{cores}x1_over_1x{cores}"] = round(best[(cores, 1)] / best[(1, cores)], 3)
            figures[model] = row
            print(f"{model:7s} steps {steps[model]}: " + ", ".join(
                f"{p}x{t} {best[(p, t)]:7.1f} img/s" for p, t in layouts)
                + f"; efficiency 1x{cores} {row[f'1x{cores}_efficiency']:.2f}, {cores}x1 {row[f'{cores}x1_efficiency']:.2f}"
                + f"; {cores}x1 / 1x{cores} = {row[f'{cores}x1_over_1x{cores}']:.2f}")
    print(f"saved {save_results('distributed', figures)}")


if __name__ == "__main__":
    main()
