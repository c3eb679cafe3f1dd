"""Stage download: fetch a dataset's raw files as published, verified by checksum."""

import argparse
from pathlib import Path

from pipeline.data.registry import get_dataset
from pipeline.data.sources import download
from pipeline.runtime import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="dataset name (see pipeline/data/registry.py)")
    parser.add_argument("--out", required=True, type=Path, help="directory for the raw files")
    args = parser.parse_args()
    download(get_dataset(args.dataset), args.out)


if __name__ == "__main__":
    run_stage(main)
