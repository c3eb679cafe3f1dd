"""Stage split: stratified, seeded train / val / test row indices (params: split)."""

import logging

from pipeline.config import load_params
from pipeline.data.parsed import load_parsed
from pipeline.data.split import make_split, save_split
from pipeline.runtime import run_stage
from src import PARSED, stage_args

log = logging.getLogger("split")


def main() -> None:
    args = stage_args(__doc__, params=True, parsed=PARSED, out="directory for train/val/test .npy indices")

    config = load_params(args.params).split
    data = load_parsed(args.parsed)
    split = make_split(data.labels, data.official, config.val_fraction, config.test_fraction, config.seed)
    save_split(split, args.out)
    log.info("%s: %s", data.name, ", ".join(f"{name} {len(rows)}" for name, rows in split.items()))


if __name__ == "__main__":
    run_stage(main)
