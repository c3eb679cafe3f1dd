"""Outputs written whole or not at all, and inputs that fail to read reported as one line.

atomic_file / atomic_dir build an output under a temporary name beside it (`.<name>.<pid>.<hex>.tmp`,
created with the modes the umask gives, as any other file) and rename it into place only when the
block succeeds. A temporary left by a killed process (its pid no longer runs) is removed the next
time the same output is written. A write that fails for want of space or permission becomes one
UserError line naming the output and the way out.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.runtime import UserError, brief, write_fault

LOW_SPACE = 1 << 20  # bytes: a write that failed without an errno with less than this free ran out of space


def _temporary(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of `path` whose writer is gone (killed before it could rename or clean up)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if not (pid.isdigit() and _running(int(pid))):  # no pid: left by an older version
            _remove(stale)


def _fault(path: Path, err: OSError) -> UserError | None:
    """The one-line error of a failed write, or None if `err` is not a fault of the disk or permissions.
    NumPy reports a short write without an errno; it is a full disk when hardly any space is left."""
    if err.errno is None:
        try:
            if shutil.disk_usage(path.parent).free < LOW_SPACE:
                err = OSError(28, os.strerror(28))  # ENOSPC
        except OSError:
            pass
    return write_fault(err, path)


@contextmanager
def _replacing(path: Path, make: Any) -> Iterator[Path]:
    """The shared body of atomic_file and atomic_dir: `make(tmp)` creates the temporary."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        make(tmp)
    except OSError as err:
        raise (_fault(path, err) or err) from None
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink() and tmp.is_dir():  # a folder: move the old one aside first
            old = _temporary(path)
            os.rename(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except OSError as err:
        if (fault := _fault(path, err)) is None:
            raise
        raise fault from None
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary file beside `path`; it replaces `path` only if the block succeeds."""
    return _replacing(Path(path), lambda tmp: os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)))


def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    return _replacing(Path(path), lambda tmp: os.mkdir(tmp, 0o777))


# What reading a corrupt or foreign file raises, across the readers the stages use (json, NumPy, zip, torch).
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, RuntimeError, pickle.UnpicklingError,
               zipfile.BadZipFile)


@contextmanager
def reading(path: str | os.PathLike, written_by: str) -> Iterator[None]:
    """Report a failure to read `path`, an output of the `written_by` stage, as one UserError line:
    missing (run that stage) or unreadable (rerun it). Wrap only the reading, not the work on what was read."""
    try:
        yield
    except UserError:
        raise
    except (FileNotFoundError, NotADirectoryError) as err:
        raise UserError(f"{err.filename or path}: missing; run the {written_by} stage first (dvc repro)") from None
    except READ_ERRORS as err:
        if isinstance(err, OSError) and (fault := write_fault(err, getattr(err, "filename", None) or path)):
            raise fault from None
        raise UserError(f"{path}: unreadable, not what the {written_by} stage writes ({brief(err)}); "
                        f"rerun that stage (dvc repro -f)") from None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
