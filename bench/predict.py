"""Throughput of predict: images/s for lenet and resnet, a .pt on PyTorch against the same model exported
to .onnx on onnxruntime, measured side by side in one run.

Models: params.yaml's lenet and resnet sections, weights drawn from the seed (speed does not depend on
what the weights learned), saved as the train stage saves them and exported with src.export's code.
Images: the first --images test images of mnist-5k (data/parsed, data/split from `dvc repro`) as 50x50
RGB JPEGs with dark strokes on white, the case predict's conversion exists for. Two figures per model
and runtime: `end_to_end` (pipeline.predict as `python -m src.predict` runs it after loading: read and
convert every file, then batched inference; the conversion is the same code for both runtimes) and
`inference` (the model alone on the converted batch of --batch-size images). Each the best of --repeats
runs after one warm-up run; the runtimes alternate run by run so they share the machine's state.
Threads: each runtime's default, then one thread each (--threads 0 1; 0 is the default), since both
runtimes' thread pools suffer on a shared, oversubscribed machine. Goal: none (issue 21 asks for the
figures); the ratio says what a machine without torch gives up, or gains.

    python -m bench.predict [--images 1000] [--repeats 3] [--batch-size 256] [--threads 0 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import load_workload, project_params, save_results, seeded_model, timed, versions
from pipeline.export import to_onnx
from pipeline.models.checkpoint import save_model
from pipeline.predict import classify, convert_files, load_classifier

MODELS = ("lenet", "resnet")
DATASET = "mnist-5k"
SIDE = 50  # the JPEGs' size: predict resizes them to 28x28
DEFAULT_THREADS = torch.get_num_threads()


def write_photos(images: np.ndarray, folder: Path) -> list[Path]:
    folder.mkdir()
    files = []
    for n, image in enumerate(images):
        files.append(folder / f"{n:05d}.jpg")
        Image.fromarray(255 - image).resize((SIDE, SIDE), Image.Resampling.BICUBIC).convert("RGB").save(files[-1], quality=90)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                        help="thread counts to measure, each for both runtimes; 0: each runtime's default")
    args = parser.parse_args()
    import onnxruntime as ort

    params, work = project_params(), load_workload(DATASET)
    print(f"{versions()}; onnxruntime {ort.__version__} (default threads); the machine may be shared: "
          "compare the ratios, not the absolute figures")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = write_photos(work.data.images[work.split["test"][:args.images]], tmp / "photos")
        for name in MODELS:
            model = seeded_model(name, params.models[name], work.data.image_shape, len(work.data.classes), params.seed)
            meta = {"model": name, "arch": dict(params.models[name].arch), "dataset": DATASET,
                    "classes": work.data.classes, "image_shape": list(work.data.image_shape),
                    "normalization": work.norm.to_dict(), "precision": "fp32"}
            save_model(tmp / f"{name}.pt", model, meta)
            (tmp / f"{name}.onnx").write_bytes(to_onnx(model.eval(), meta))
            for threads in args.threads:
                measure(name, tmp, files, threads, args, figures)
    figures["settings"] = {"images": len(files), "batch_size": args.batch_size, "repeats": args.repeats,
                           "default_torch_threads": DEFAULT_THREADS}
    torch.set_num_threads(DEFAULT_THREADS)  # save_results records the machine's default
    print(f"saved to {save_results('predict', figures)}")


def measure(name: str, tmp: Path, files: list[Path], threads: int, args: argparse.Namespace,
            figures: dict[str, Any]) -> None:
    """Both runtimes on model `name`, `threads` threads each (0: each its default): figures updated."""
    torch.set_num_threads(threads or DEFAULT_THREADS)
    label = f"{threads} thread{'s' * (threads != 1)}" if threads else "default threads"
    classifiers = {runtime: load_classifier(tmp / f"{name}{suffix}", "cpu", threads or None)
                   for runtime, suffix in (("torch", ".pt"), ("onnxruntime", ".onnx"))}
    batch = np.stack([c.image for _, c in convert_files(files[:args.batch_size], (28, 28), "auto", True, print)])
    best = {runtime: {"end_to_end": 0.0, "inference": 0.0} for runtime in classifiers}
    for repeat in range(args.repeats + 1):  # the first round warms up (oneDNN kernels, ORT arenas)
        for runtime, classifier in classifiers.items():
            seconds, _ = timed(lambda c=classifier: classify(
                c, convert_files(files, c.image_size, "auto", True, print), 1, args.batch_size))
            infer_s, _ = timed(classifier.logits, batch)
            if repeat:
                best[runtime]["end_to_end"] = max(best[runtime]["end_to_end"], len(files) / seconds)
                best[runtime]["inference"] = max(best[runtime]["inference"], len(batch) / infer_s)
    for runtime, rates in best.items():
        figures[f"{name}/{runtime}/{label}"] = {k: round(v, 1) for k, v in rates.items()}
        print(f"{name:7s} {runtime:12s} {label:16s} end to end {rates['end_to_end']:8.1f} images/s   "
              f"inference alone {rates['inference']:9.1f} images/s")
    for kind in ("end_to_end", "inference"):
        ratio = best["onnxruntime"][kind] / best["torch"][kind]
        figures[f"{name}/onnxruntime_over_torch/{label}/{kind}"] = round(ratio, 2)
        print(f"{name:7s} onnxruntime / torch, {label}, {kind.replace('_', ' ')}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
