"""Stage parse: raw published files -> images uint8 (N, H, W), labels int64 (N,), meta.json (params:
image_folder_keeps_label, for a user's folder)."""

import logging

from pipeline.data.formats.readers import READERS
from pipeline.data.parsed import ParsedDataset, save_parsed
from pipeline.config import load_params
from pipeline.data.registry import DATASETS, FOLDER_KEEPS_LABEL, folder_dataset
from pipeline.runtime import run_stage
from src import stage_args

log = logging.getLogger("parse")


def main() -> None:
    args = stage_args(__doc__, text=("dataset",), params=True, dataset="dataset name",
                      raw="directory written by the download stage", out="directory for the parsed arrays")

    # A name the registry does not know is a user's image folder: the download stage rejected any other.
    if args.dataset in DATASETS:
        spec = DATASETS[args.dataset]
    else:
        keeps_label = load_params(args.params).image_folder_keeps_label.get(args.dataset, FOLDER_KEEPS_LABEL)
        spec = folder_dataset(args.dataset, tuple(keeps_label))
    images, labels, official, classes, conversion = READERS[spec.format](spec, args.raw)
    save_parsed(ParsedDataset(spec.name, images, labels, list(classes), official, conversion, spec.keeps_label),
                args.out)
    log.info("%s: %d images of %dx%d, %d classes, official %s", spec.name, len(labels), *images.shape[1:],
             len(classes), official or "none")


if __name__ == "__main__":
    run_stage(main)
