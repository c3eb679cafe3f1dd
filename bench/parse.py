"""Parse throughput of the idx and amat readers against the ways the EURNN and ResNet notebooks read
them, and the amat parse's peak memory. Every ratio is measured in the same run.

  MNIST_PIPELINE_MIRROR=../shared/datasets python -m bench.parse [--amat-rows 12000] [--notebook-idx-images 300]

- idx: pipeline.data.formats.idx.read_idx on Fashion-MNIST's train images (60,000; from $MNIST_PIPELINE_MIRROR
  or ../shared/datasets, else a synthetic file of the same shape) against the EURNN notebook's loop, which
  reads one byte per gzip.read(1) call. That loop would take minutes on 60,000 images, so it runs on the
  first --notebook-idx-images images and both are compared per image. read_idx reads what the download stage
  keeps: the .gz's payload, inflated once there to verify its checksum. A second line counts that inflate
  too.
- amat: pipeline.data.formats.amat.parse_amat on a generated file of --amat-rows rows in the published layout
  (784 pixel values then the label, numpy savetxt's %.18e; pixels are float32 grey levels k/255, a
  third of them 0, as in MNIST) against np.loadtxt and the ResNet notebook's reader on the same bytes,
  which reads as its setup() does: a list of Python floats per line, then torch.tensor of the lists;
  the time of the lists alone is printed too. The machine's speed drifts by up to 2x over minutes, and
  the Python-heavy baselines drift more than NumPy code, so the amat readers run interleaved, min of
  --repeats.
- memory: the parse runs in a fresh subprocess under tracemalloc; its peak traced allocation (the
  returned arrays included) is compared with the bytes of the arrays it returns.

Goals: idx >= 1000x the EURNN notebook's reader; amat >= 10x the ResNet notebook's reader and >= 5x
np.loadtxt; amat peak memory <= 2x the parsed arrays. Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT, save_results, timed
from pipeline.data.formats.amat import parse_amat
from pipeline.data.formats.idx import read_idx
from pipeline.data.registry import MIRROR_ENV

OUT = ROOT / "bench" / "out"


def eurnn_notebook_read(path: Path, n: int) -> np.ndarray:
    """The EURNN notebook's reader, faithfully: skip the header, then one gzip read(1) and ord() per pixel."""
    images = np.empty((n, 784), dtype="uint8")
    with gzip.open(path, "rb") as data:
        data.read(16)
        for i in range(n):
            for j in range(784):
                images[i, j] = ord(data.read(1))
    return images


def resnet_notebook_read(path: Path) -> tuple[float, torch.Tensor]:
    """The ResNet notebook's reader, faithfully (its setup(), for one file): a list of Python floats per line, then
    torch.tensor of those lists. Returns the seconds the lists alone took, and the tensor."""
    start = time.perf_counter()
    with open(path) as f:
        rows = [[float(a) for a in line.split()] for line in f]
    lists = time.perf_counter() - start
    return lists, torch.tensor(rows)


def idx_file() -> Path:
    mirror = Path(os.environ.get(MIRROR_ENV, ROOT.parent / "shared" / "datasets"))
    path = mirror / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    if path.is_file():
        return path
    path = OUT / "train-images-idx3-ubyte.gz"  # synthetic stand-in of the same shape
    if not path.exists():
        images = np.random.default_rng(0).integers(0, 256, (60_000, 28, 28), dtype=np.uint8)
        path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + np.array([60_000, 28, 28], ">u4").tobytes()
                                       + images.tobytes(), 6))
    return path


def amat_file(rows: int) -> Path:
    path = OUT / f"rot-back-{rows}.amat"
    if not path.exists():
        rng = np.random.default_rng(0)
        levels = rng.integers(0, 256, (rows, 784))
        levels[rng.random((rows, 784)) < 1 / 3] = 0
        pixels = (levels / np.float32(255)).astype(np.float32).astype(np.float64)
        buffer = io.BytesIO()
        np.savetxt(buffer, np.column_stack([pixels, rng.integers(0, 10, rows)]), fmt="%.18e")
        path.write_bytes(buffer.getvalue())
    return path


# tracemalloc sees every NumPy buffer and Python object the parse allocates (RSS would hide it under the
# interpreter's earlier peak); the peak includes the returned arrays themselves.
MEMORY_PROBE = """
import sys, tracemalloc
sys.path.insert(0, sys.argv[1])
from pipeline.data.formats.amat import parse_amat
f = open(sys.argv[2], "rb")
tracemalloc.start()
pixels, labels = parse_amat(f, int(sys.argv[3]), "bench")
print(tracemalloc.get_traced_memory()[1], pixels.nbytes + labels.nbytes)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amat-rows", type=int, default=12_000)
    parser.add_argument("--notebook-idx-images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each amat reader")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    path = idx_file()
    compressed = path.read_bytes()
    # The download stage inflates the .gz once, to verify its payload checksum, and keeps that payload;
    # parse reads it. Both sides are timed, best of 3; the EURNN notebook inflates inside its loop.
    inflates = [timed(gzip.decompress, compressed) for _ in range(3)]
    inflate = min(seconds for seconds, _ in inflates)
    stored = OUT / path.name.removesuffix(".gz")
    stored.write_bytes(inflates[0][1])
    ours, images = min((timed(read_idx, stored, 3) for _ in range(3)), key=lambda run: run[0])
    theirs, their_images = timed(eurnn_notebook_read, path, args.notebook_idx_images)
    assert np.array_equal(their_images, images[:args.notebook_idx_images].reshape(-1, 784)), "readers disagree"
    per_image = theirs / args.notebook_idx_images
    print(f"idx  {path}: EURNN notebook {args.notebook_idx_images} images in {theirs:.2f} s; "
          f"ours {len(images)} images:")
    print(f"     parse (read_idx on the kept payload) {ours * 1e3:.1f} ms: per image "
          f"{per_image * len(images) / ours:,.0f}x faster than the EURNN notebook")
    print(f"     with the download stage's inflate ({inflate:.3f} s) counted too: "
          f"{per_image * len(images) / (inflate + ours):,.0f}x")
    path = amat_file(args.amat_rows)
    size_mb = path.stat().st_size / 1e6
    with open(path, "rb") as f:
        pixels, _ = parse_amat(f, args.amat_rows, str(path))
    assert np.array_equal(pixels, np.rint(np.loadtxt(path)[:, :-1] * 255)), "amat parse differs from np.loadtxt"
    times = {"ours": [], "np.loadtxt": [], "ResNet notebook": [], "ResNet notebook lists alone": []}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every reader alike
        with open(path, "rb") as f:
            times["ours"].append(timed(parse_amat, f, args.amat_rows, str(path))[0])
        times["np.loadtxt"].append(timed(np.loadtxt, path)[0])
        total, (lists, _) = timed(resnet_notebook_read, path)
        times["ResNet notebook"].append(total)
        times["ResNet notebook lists alone"].append(lists)
    best = {name: min(runs) for name, runs in times.items()}
    others = ", ".join(f"{name} {best[name]:.2f} s ({best[name] / best['ours']:.1f}x)" for name in list(times)[1:])
    print(f"amat {path.name} ({args.amat_rows} rows, {size_mb:.0f} MB), min of {args.repeats}: "
          f"ours {best['ours']:.2f} s; {others}")
    print("     all runs: " + "; ".join(f"{name} {', '.join(f'{t:.2f}' for t in runs)}"
                                        for name, runs in times.items()))

    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ROOT), str(path), str(args.amat_rows)],
                           capture_output=True, text=True, check=True)
    peak, arrays = map(int, probe.stdout.split())
    print(f"amat peak memory {peak / 1e6:.1f} MB for {arrays / 1e6:.1f} MB of parsed arrays "
          f"({peak / arrays:.2f}x)")
    save_results("parse", {
        "idx": {"images": len(images), "parse, ms": round(ours * 1e3, 1),
                "per image vs the EURNN notebook (goal >= 1000)": round(per_image * len(images) / ours),
                "the same, with the download stage's inflate": round(per_image * len(images) / (inflate + ours))},
        "amat": {"rows": args.amat_rows, "parse, s": round(best["ours"], 3),
                 **{f"vs {name}": round(best[name] / best["ours"], 1) for name in list(times)[1:]},
                 "peak memory / parsed arrays (goal <= 2)": round(peak / arrays, 2)}})


if __name__ == "__main__":
    main()
