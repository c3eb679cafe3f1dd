"""Stage folder: snapshot a user's image folder (params.yaml image_folders) so DVC tracks its content, with
its conversion options (params.yaml image_conversion) when it has any (params: image_conversion)."""

import json
import logging

from pipeline.config import load_params
from pipeline.data.registry import CONVERSION_FILE
from pipeline.data.sources import copy_folder
from pipeline.runtime import UserError, run_stage
from src import stage_args

log = logging.getLogger("folder")


def main() -> None:
    args = stage_args(__doc__, text=("name",), optional=("name",), params=True,
                      source="the user's folder of <class>/<image> files", out="directory for the snapshot",
                      name="its name in params.yaml image_folders (for its image_conversion options)")
    options = load_params(args.params).image_conversion.get(args.name) if args.name else None
    if (args.source / CONVERSION_FILE).exists():
        raise UserError(f"{args.source / CONVERSION_FILE}: a file outside any class directory; expected "
                        "<class>/<image> (conversion options go in params.yaml image_conversion)")
    extra = {} if options is None else {CONVERSION_FILE: json.dumps(options.options()) + "\n"}
    log.info("%s: %d files%s", args.source, copy_folder(args.source, args.out, extra),
             f", converted as {extra[CONVERSION_FILE].strip()}" if extra else "")


if __name__ == "__main__":
    run_stage(main)
