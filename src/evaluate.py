"""Stage evaluate: headline test metrics, detail metrics (with 95% intervals), confusion data, which test
images it got right (for paired comparisons from git) and per-image outputs of one trained model (params:
evaluate, device), with the test-time augmentation evaluate.tta asks for where the dataset's labels allow
it and the model trained with it."""

import numpy as np

from pipeline.config import load_params
from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split
from pipeline.device import out_of_memory_as_error, resolve_device
from pipeline.evaluation import evaluate, first_conv_filters, trained_transforms, tta_views
from pipeline.inference import Normalization
from pipeline.io import atomic_file, write_json
from pipeline.metrics import confusion_records, evenly_spaced
from pipeline.models.checkpoint import check_trained_on, load_model
from pipeline.outcomes import Outcomes, encode, hash_test_set
from pipeline.runtime import run_stage
from src import PARSED, SPLIT, stage_args


def main() -> None:
    args = stage_args(__doc__, params=True, weights="file written by the train stage", parsed=PARSED, split=SPLIT,
                      metrics="output: headline metrics JSON",
                      details="output: detail JSON (rotation curve, per-class scores, top confusions, intervals)",
                      correct="output: which test images it got right (bitmap) and the test set's hash, JSON",
                      confusion="output: {actual, predicted} records JSON",
                      predictions="output (.npz): probabilities, reliability bins, features, first-layer filters")

    params = load_params(args.params)
    config = params.evaluate
    device = resolve_device(params.device)
    model, meta = load_model(args.weights, device)
    data = load_parsed(args.parsed)
    check_trained_on(meta, args.weights, data.name, data.classes, data.image_shape)
    test = load_split(args.split)["test"]
    labels = data.labels[test]

    feature_rows = evenly_spaced(len(test), config.embedding_points)
    with out_of_memory_as_error(f"evaluate.batch_size: {config.batch_size}"):
        metrics, details, outputs = evaluate(
            model, data.images[test], labels, data.classes, norm=Normalization(**meta["normalization"]),
            batch_size=config.batch_size, device=device, rotations=config.rotations, bins=config.calibration_bins,
            confusions=config.confusions, feature_rows=feature_rows,
            tta=tta_views(config.tta, data.keeps_label, trained_transforms(meta)))
    predictions = outputs.predictions
    filters = first_conv_filters(model)  # None for models without a convolution
    # np.savez stamps every member with the same fixed date (zipfile's default for a member named by a
    # string), so equal arrays give equal bytes and a rerun does not rerun plot (the e2e test checks it).
    with atomic_file(args.predictions) as tmp, open(tmp, "wb") as f:
        np.savez(f, predictions=predictions, probabilities=outputs.probabilities, feature_rows=feature_rows,
                 features=outputs.features,
                 **{f"reliability_{key}": value for key, value in outputs.reliability.items()},
                 **({} if filters is None else {"filters": filters}))
    write_json(args.confusion, confusion_records(labels, predictions, data.classes))
    outcomes = Outcomes(hash_test_set(test, labels, data.images[test]), predictions == labels)
    write_json(args.correct, encode(outcomes, labels, data.classes))
    write_json(args.details, details)
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    run_stage(main)
