"""Fetch a dataset's raw files from the first source that yields a verified copy.

Order: the local mirror named by $MNIST_PIPELINE_MIRROR, a system data directory, an installed
package's resource, then the official URL and its mirrors. Each candidate is copied to a temporary
name, verified (the SHA-256 of its decompressed payload, else the published MD5 of the file, and in
every case that it is a whole archive of its kind, not a truncated file or an HTML error page), and
renamed into place only when whole. A .gz file is kept as the payload that verification inflates
(RawFile.stored_name); archives are kept as published.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from pipeline.data.registry import MIRROR_ENV, DatasetSpec, RawFile
from pipeline.io import atomic_dir, atomic_file
from pipeline.runtime import UserError, write_fault

log = logging.getLogger(__name__)
CHUNK = 1 << 20
TIMEOUT_S = 60


class SourceError(Exception):
    """One source failed; the reason goes into the final message if every source fails."""


GZIP_SUFFIXES = (".gz", ".tgz")


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


def payload_sha256(path: Path, gzipped: bool, keep: Path | None = None) -> str:
    """SHA-256 of the file's content, decompressed first when it is gzip; with `keep`, the content is also
    written there."""
    digest = hashlib.sha256()
    opener = gzip.open if gzipped else open
    with open(keep, "wb") if keep else contextlib.nullcontext() as out:
        try:
            with opener(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    if out:
                        out.write(chunk)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # not gzip or a bad CRC, truncated, corrupted
            raise SourceError(f"not a readable gzip file ({err}); truncated, or an HTML page saved as .gz?") from None
    return digest.hexdigest()


def verify(path: Path, raw: RawFile, keep: Path | None = None) -> None:
    """Raise SourceError unless `path` is a whole, correct copy of `raw`; with `keep`, its decompressed
    payload is written there on the way."""
    if _looks_like_html(path):
        raise SourceError(f"an HTML page, not {raw.name} (an error or login page saved in its place)")
    payload = payload_sha256(path, raw.name.endswith(GZIP_SUFFIXES), keep)  # reads every byte: finds truncation
    if raw.name.endswith((".zip", ".tgz")):
        check_layout(path, raw)
    if raw.sha256:
        if payload != raw.sha256:
            raise SourceError(f"checksum mismatch (payload sha256 {payload[:12]}..., expected {raw.sha256[:12]}...)")
    elif raw.published_md5:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != raw.published_md5:
            raise SourceError(f"checksum mismatch (md5 {digest.hexdigest()[:12]}..., "
                              f"expected {raw.published_md5[:12]}...)")
    else:
        log.warning("%s: no checksum is published; kept on structural checks alone", raw.name)


def _archive_members(path: Path, name: str) -> list[str]:
    """The regular-file members of a .zip or .tgz, read through to the end (every CRC checked)."""
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                if (broken := zf.testzip()) is not None:
                    raise SourceError(f"zip member {broken} fails its CRC; truncated or corrupted")
                return [info.filename for info in zf.infolist() if not info.is_dir()]
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise SourceError(f"not a readable zip archive ({err}); truncated?") from None
    try:
        with tarfile.open(path, "r|gz") as tar:
            return [member.name for member in tar if member.isfile()]  # iterating reads the stream to its end
    except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
        raise SourceError(f"a gzip stream but not a readable tar archive ({err})") from None


def check_layout(path: Path, raw: RawFile) -> None:
    """Raise SourceError unless the archive reads through to its end and has the layout of `raw`."""
    members = _archive_members(path, raw.name)
    patterns = [re.compile(pattern) for pattern in raw.layout]
    if patterns:
        if stray := next((m for m in members if not any(p.fullmatch(m) for p in patterns)), None):
            raise SourceError(f"unexpected member {stray!r} ({len(members)} files); not the published archive")
        if missing := next((p.pattern for p in patterns if not any(p.fullmatch(m) for m in members)), None):
            raise SourceError(f"no member matching {missing!r} ({len(members)} files); not the published archive")


def candidate_sources(dataset: str, raw: RawFile, system_dir: str | None = None) -> list[tuple[str, str]]:
    """(kind, location) pairs in the order they are tried."""
    sources = []
    if mirror := os.environ.get(MIRROR_ENV):
        # A relative mirror is relative to the repository root, which DVC names in DVC_ROOT: a queued
        # experiment (`dvc queue start`) runs its stages in a copy under .dvc/tmp/exps/.
        sources.append(("mirror", str(Path(os.environ.get("DVC_ROOT", ".")) / mirror / dataset / raw.name)))
    if system_dir:
        sources.append(("system", str(Path(system_dir) / raw.name)))
    if raw.package_resource:
        sources.append(("package", "/".join(raw.package_resource)))
    sources += [("url", url) for url in raw.urls]
    return sources


def _copy_from(kind: str, location: str, dest: Path) -> None:
    if kind == "package":
        package, resource = location.split("/", 1)
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(f"package {package!r} is not installed")
        location = str(Path(spec.submodule_search_locations[0]) / resource)
    if kind in ("mirror", "system", "package"):
        if not os.path.isfile(location):
            raise SourceError(f"missing file {location}")
        try:
            open(location, "rb").close()  # a fault of the source, not of the output folder
        except OSError as err:
            raise SourceError(f"unreadable ({err.strerror})") from None
        shutil.copyfile(location, dest)
        return
    try:
        with urllib.request.urlopen(location, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
    except urllib.error.HTTPError as err:
        raise SourceError(f"HTTP {err.code} {err.reason}") from None
    except OSError as err:  # URLError included
        if write_fault(err):  # the output folder's fault (full disk, permissions), not the source's
            raise
        raise SourceError(f"unreachable ({getattr(err, 'reason', err)})") from None


def fetch_file(dataset: str, raw: RawFile, out_dir: Path, system_dir: str | None = None) -> Path:
    """Put a verified copy of `raw` at out_dir/raw.stored_name (a .gz file: its decompressed payload), or
    raise UserError listing every attempt."""
    failures = []
    target = out_dir / raw.stored_name
    for kind, location in candidate_sources(dataset, raw, system_dir):
        try:
            with atomic_file(target) as kept:
                if raw.stored_name == raw.name:
                    _copy_from(kind, location, kept)
                    verify(kept, raw)
                else:
                    with tempfile.TemporaryDirectory(prefix=".fetch.", dir=out_dir) as scratch:
                        fetched = Path(scratch) / raw.name
                        _copy_from(kind, location, fetched)
                        verify(fetched, raw, keep=kept)
        except SourceError as err:
            failures.append(f"{kind} {location}: {err}")
            log.warning("%s: %s %s failed: %s", raw.name, kind, location, err)
            continue
        log.info("%s: verified copy from %s %s", raw.name, kind, location)
        return target
    tried = "; ".join(failures) or f"no source configured (set {MIRROR_ENV})"
    raise UserError(f"{dataset}/{raw.name}: every source failed: {tried}")


CHECKSUMS = "SHA256SUMS"  # beside the raw files: the SHA-256 of each file as accepted (`sha256sum -c` format)


def download(spec: DatasetSpec, out_dir: Path) -> None:
    """Fetch every raw file of `spec` into out_dir, which appears whole (with its CHECKSUMS) or not at all."""
    with atomic_dir(out_dir) as tmp:
        sums = []
        for raw in spec.files:
            path = fetch_file(spec.name, raw, tmp, spec.system_dir)
            sums.append(f"{payload_sha256(path, gzipped=False)}  {path.name}\n")
        (tmp / CHECKSUMS).write_text("".join(sums))


def copy_folder(source: Path, out_dir: Path, extra: dict[str, str] | None = None) -> int:
    """Copy a user's image folder (<class>/<file>, hidden files left out) into out_dir, atomically, with the
    `extra` {name: text} files beside it; returns the number of files copied. Links are refused: the copy
    must hold the data, not point back at it."""
    if not source.is_dir():
        raise UserError(f"{source}: no such folder (named in params.yaml image_folders)")
    files = sorted(p for p in source.rglob("*") if not any(part.startswith(".") for part in p.relative_to(source).parts))
    for path in files:
        if path.is_symlink():
            raise UserError(f"{path}: a symbolic link; image folders must hold the files themselves")
        if path.is_dir() and not any(not p.name.startswith(".") for p in path.iterdir()):
            # DVC does not track empty folders, so the class would vanish from the snapshot unnoticed.
            raise UserError(f"{path}: an empty class directory; put its images in it or remove it")
    with atomic_dir(out_dir) as tmp:
        for path in files:
            if path.is_file():
                (tmp / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, tmp / path.relative_to(source))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
    return sum(p.is_file() for p in files)
