"""What every stage entry point shares: the user-error type and the way a stage is run.

Deliberately free of torch and other heavy imports: the data stages start in a fraction of a second.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable

# Faults of the machine rather than of the code: each becomes one line naming the path and the way out.
WRITE_FAULTS = {
    errno.ENOSPC: "no space left on the device; free space, then rerun",
    errno.EDQUOT: "disk quota exceeded; free space, then rerun",
    errno.EROFS: "read-only file system; write the outputs to a writable folder (a clone elsewhere), then rerun",
    errno.EACCES: "permission denied; make the folder writable for this user (chmod / chown), then rerun",
    errno.EPERM: "operation not permitted; make the folder writable for this user (chmod / chown), then rerun",
}


class UserError(Exception):
    """A mistake the user can fix (bad params, missing data): reported as one line, no traceback."""


def brief(err: BaseException, limit: int = 100) -> str:
    """The gist of a library's exception in a few words: its type and first sentence, cut to `limit`."""
    if isinstance(err, EOFError):
        return "it ends early: empty or truncated"
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text.split(". ")[0].rstrip(".")
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def write_fault(err: OSError, path: object = None) -> UserError | None:
    """One line for an OSError that is a fault of the disk or the permissions (None for any other)."""
    hint = WRITE_FAULTS.get(err.errno)
    if hint is None:
        return None
    return UserError(f"{path or err.filename or 'output'}: {hint}")


def missing_module(err: ModuleNotFoundError) -> str:
    return (f"error: {sys.executable} cannot import {err.name!r}: this Python lacks the pipeline's dependencies; "
            "activate the project's environment (source .venv/bin/activate) or run `make run`")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(): log to stderr, turn a UserError (or a disk, permission or environment fault)
    into one line and exit status 2."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as err:  # a module imported late, e.g. Pillow for image folders
        print(missing_module(err), file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if (fault := write_fault(err)) is None:
            raise
        print(f"error: {fault}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
