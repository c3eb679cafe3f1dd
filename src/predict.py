"""Classify image files and folders with a trained model (a .pt from the train stage, or an .onnx from
src.export, which runs on onnxruntime without torch).

Each image is brought to what the model was trained on (grayscale, the model's size with the aspect ratio
kept and the background padded, light strokes on dark) and the output says what was done. A file that is
not a usable image is reported on its own `skipped:` line and left out (exit status 1 if any was);
--strict makes it an error. Exit status 2: nothing could be done (an `error:` line says why).

Examples:
  python -m src.predict --weights models/mnist-5k/lenet.pt digit.jpg photos/
  python -m src.predict --weights models/mnist-5k/lenet.onnx photos/ --topk 3 --format csv --output out.csv
"""

import argparse
import logging
import sys
from pathlib import Path

from pipeline.data.convert import IMAGE_SUFFIXES, INVERT_CHOICES, image_files
from pipeline.io import atomic_file
from pipeline.predict import FORMATS, classify, convert_files, load_classifier, render
from pipeline.runtime import UserError, run_stage

log = logging.getLogger("predict")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one `error:` line and exit status 2, as the stages report
        print(f"error: {message} (see python -m src.predict --help)", file=sys.stderr)
        sys.exit(2)


def parse_args() -> argparse.Namespace:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="image files, and folders searched for images")
    parser.add_argument("--weights", required=True, type=Path, help="a models/<dataset>/<model>.pt or an exported .onnx")
    parser.add_argument("--topk", type=int, default=3, help="how many of the most probable classes to list (default 3)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="table (default on the terminal), csv or json (default for --output: from its suffix)")
    parser.add_argument("--output", type=Path, help="write the predictions to this file (csv or json) instead of stdout")
    parser.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                        help="polarity: auto inverts images with a light background (dark strokes on paper); "
                             "true / false force it")
    parser.add_argument("--strict", action="store_true", help="stop at the first file that is not a usable image")
    parser.add_argument("--batch-size", type=int, default=256, help="images per inference batch (default 256)")
    parser.add_argument("--device", default="auto", help="for a .pt: auto | cpu | cuda | mps (default auto)")
    args = parser.parse_args()
    if args.topk < 1 or args.batch_size < 1:
        parser.error(f"--topk and --batch-size must be at least 1 (got {args.topk}, {args.batch_size})")
    if args.format is None:
        args.format = "table" if args.output is None else ("json" if args.output.suffix.lower() == ".json" else "csv")
    if args.output is not None and args.format == "table":
        parser.error("--output writes csv or json; give --format csv or --format json")
    return args


def main() -> None:
    args = parse_args()
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise UserError(f"{missing[0]}: no such file or folder")
    files = image_files(args.paths)
    if not files:
        raise UserError(f"no image files in {', '.join(map(str, args.paths))} (looked for "
                        f"{' '.join(IMAGE_SUFFIXES)})")
    classifier = load_classifier(args.weights, args.device)
    skipped = []

    def skip(message: str) -> None:
        skipped.append(message)
        print(f"skipped: {message}", file=sys.stderr)

    converted = convert_files(files, classifier.image_size, args.invert, args.strict, skip)
    if not converted:
        raise UserError(f"none of the {len(files)} files is a usable image (each is listed above)")
    predictions = classify(classifier, converted, args.topk, args.batch_size)
    text = render(predictions, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        with atomic_file(args.output) as tmp:
            tmp.write_text(text)
    meta = classifier.meta
    log.info("%d images classified by %s/%s (%s)%s", len(predictions), meta["dataset"], meta["model"],
             classifier.runtime, f"; {len(skipped)} skipped" if skipped else "")
    if skipped:
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
