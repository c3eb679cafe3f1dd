"""Stage split: stratified, seeded train / val / test row indices (params: split)."""

import argparse
import logging
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.parsed import load_parsed
from pipeline.data.split import make_split, save_split
from pipeline.runtime import run_stage

log = logging.getLogger("split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parsed", required=True, type=Path, help="directory written by the parse stage")
    parser.add_argument("--out", required=True, type=Path, help="directory for train/val/test .npy indices")
    parser.add_argument("--params", default="params.yaml", help="params file")
    args = parser.parse_args()

    config = load_params(args.params).split
    data = load_parsed(args.parsed)
    split = make_split(data.labels, data.official, config.val_fraction, config.test_fraction, config.seed)
    save_split(split, args.out)
    log.info("%s: %s", data.name, ", ".join(f"{name} {len(rows)}" for name, rows in split.items()))


if __name__ == "__main__":
    run_stage(main)
