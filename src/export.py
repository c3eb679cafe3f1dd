"""Export a trained model to ONNX, checked against PyTorch before the file is written.

onnxruntime runs the exported graph on every test image of the dataset the model was trained on; the file
is written only if each logit is within 1e-4 of PyTorch's and every predicted class is the same. A model
the exporter cannot handle is an error that quotes the exporter's message; no file is written.

Example:
  python -m src.export --weights models/mnist-5k/lenet.pt --parsed data/parsed/mnist-5k
      --split data/split/mnist-5k --out models/mnist-5k/lenet.onnx
"""

import argparse
import logging
from pathlib import Path

import torch

from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split
from pipeline.export import OPSET, TOLERANCE, compare, to_onnx
from pipeline.io import atomic_file, write_json
from pipeline.models.checkpoint import load_model
from pipeline.runtime import UserError, run_stage
from src import PARSED, SPLIT

log = logging.getLogger("export")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, type=Path, help="file written by the train stage (.pt)")
    parser.add_argument("--parsed", required=True, type=Path, help=PARSED)
    parser.add_argument("--split", required=True, type=Path, help=SPLIT + " (its test rows are the check)")
    parser.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--report", type=Path, help="also write the check's figures to this JSON file")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--batch-size", type=int, default=500, help="test images per batch of the check")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.out.suffix != ".onnx":
        raise UserError(f"--out {args.out}: give a file name ending in .onnx (predict picks onnxruntime by it)")
    model, meta = load_model(args.weights, torch.device("cpu"))
    data = load_parsed(args.parsed)
    if data.name != meta["dataset"]:
        raise UserError(f"--parsed {args.parsed} holds {data.name}, but {args.weights} was trained on "
                        f"{meta['dataset']}; give data/parsed/{meta['dataset']}")
    images = data.images[load_split(args.split)["test"]]
    name = f"{meta['dataset']}/{meta['model']}"
    try:
        onnx_model = to_onnx(model, meta, args.opset)
    except ValueError as err:
        raise UserError(f"{name}: the ONNX exporter (torch.onnx.export, dynamo, opset {args.opset}) cannot "
                        f"handle this model; no file written. Its message: {err}") from None
    check = compare(onnx_model, model, meta, images, args.batch_size)
    if check["max_abs_logit_difference"] > TOLERANCE or check["class_disagreements"]:
        raise UserError(f"{name}: the exported model disagrees with PyTorch on the {len(images)} test images "
                        f"(largest logit difference {check['max_abs_logit_difference']:.2e}, allowed {TOLERANCE:.0e}; "
                        f"{check['class_disagreements']} predicted classes differ); no file written")
    with atomic_file(args.out) as tmp:
        tmp.write_bytes(onnx_model)
    if args.report:
        write_json(args.report, {"model": meta["model"], "dataset": meta["dataset"], "opset": args.opset,
                                 "tolerance": TOLERANCE, **check})
    log.info("%s: %s written (opset %d, %.0f kB); onnxruntime matches PyTorch on %d test images: largest logit "
             "difference %.1e, classes identical", name, args.out, args.opset, len(onnx_model) / 1e3, len(images),
             check["max_abs_logit_difference"])


if __name__ == "__main__":
    run_stage(main)
