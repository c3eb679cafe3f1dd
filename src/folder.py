"""Stage folder: snapshot a user's image folder (params.yaml image_folders) so DVC tracks its content."""

import argparse
import logging
from pathlib import Path

from pipeline.data.sources import copy_folder
from pipeline.runtime import run_stage

log = logging.getLogger("folder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, type=Path, help="the user's folder of <class>/<image> files")
    parser.add_argument("--out", required=True, type=Path, help="directory for the snapshot")
    args = parser.parse_args()
    log.info("%s: %d files", args.source, copy_folder(args.source, args.out))


if __name__ == "__main__":
    run_stage(main)
