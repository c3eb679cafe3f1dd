"""Stage download: fetch a dataset's raw files, verified by checksum; each .gz is kept as its verified payload.

A user's image folder (params.yaml image_folders) is not fetched: its snapshot, written by the
folder stage under --folders, is copied instead, so every dataset reaches parse the same way.
"""

import logging

from pipeline.data.registry import DATASETS, get_dataset
from pipeline.data.sources import copy_folder, download
from pipeline.runtime import run_stage
from src import stage_args

log = logging.getLogger("download")


def main() -> None:
    args = stage_args(__doc__, text=("dataset",), optional=("folders",),
                      dataset="dataset name (see pipeline/data/registry.py)", out="directory for the raw files",
                      folders="directory of user-folder snapshots (<name>/<class>/<image>)")
    if args.dataset not in DATASETS and args.folders and (args.folders / args.dataset).is_dir():
        log.info("%s: %d files from the folder snapshot", args.dataset,
                 copy_folder(args.folders / args.dataset, args.out))
        return
    download(get_dataset(args.dataset), args.out)


if __name__ == "__main__":
    run_stage(main)
