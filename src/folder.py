"""Stage folder: snapshot a user's image folder (params.yaml image_folders) so DVC tracks its content."""

import logging

from pipeline.data.sources import copy_folder
from pipeline.runtime import run_stage
from src import stage_args

log = logging.getLogger("folder")


def main() -> None:
    args = stage_args(__doc__, source="the user's folder of <class>/<image> files",
                      out="directory for the snapshot")
    log.info("%s: %d files", args.source, copy_folder(args.source, args.out))


if __name__ == "__main__":
    run_stage(main)
