"""Stage evaluate: test-set metrics and confusion data of one trained model (params: evaluate, device)."""

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split
from pipeline.device import resolve_device
from pipeline.evaluation import confusion_records, evaluate
from pipeline.inference import Normalization
from pipeline.io import atomic_file, write_json
from pipeline.models.checkpoint import load_model
from pipeline.runtime import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True, type=Path, help="file written by the train stage")
    parser.add_argument("--parsed", required=True, type=Path, help="directory written by the parse stage")
    parser.add_argument("--split", required=True, type=Path, help="directory written by the split stage")
    parser.add_argument("--metrics", required=True, type=Path, help="output: metrics JSON")
    parser.add_argument("--confusion", required=True, type=Path, help="output: {actual, predicted} records JSON")
    parser.add_argument("--predictions", required=True, type=Path, help="output: predicted labels (.npy)")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()

    params = load_params(args.params)
    device = resolve_device(params.device)
    model, meta = load_model(args.weights, device)
    data = load_parsed(args.parsed)
    test = load_split(args.split)["test"]
    labels = data.labels[test]

    metrics, predictions = evaluate(model, data.images[test], labels, data.classes,
                                    norm=Normalization(**meta["normalization"]),
                                    batch_size=params.evaluate.batch_size, device=device)
    with atomic_file(args.predictions) as tmp, open(tmp, "wb") as f:
        np.save(f, predictions)
    write_json(args.confusion, confusion_records(labels, predictions, data.classes))
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_stage(main)
