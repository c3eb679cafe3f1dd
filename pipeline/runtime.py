"""What every stage entry point shares: the user-error type and the way a stage is run.

Deliberately free of torch and other heavy imports: the data stages start in a fraction of a second.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (bad params, missing data): reported as one line, no traceback."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): log to stderr, turn a UserError into one line and exit status 2."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
