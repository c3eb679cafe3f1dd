"""Archive safety: archives are read in memory, never extracted, and members that would land outside the
archive's directory if extracted (absolute paths, `..`, links, devices) are refused all the same."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from pipeline.runtime import UserError


def check_member_name(archive: Path | str, name: str) -> PurePosixPath:
    """The member's path, or a UserError if extracting it would write outside the target directory."""
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise UserError(f"{archive}: member {name!r} would land outside the target directory; refused")
    return path


def safe_tar_files(archive: Path, tar: tarfile.TarFile) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(path, content) of each regular file of a tar stream; links, devices and escaping names refused."""
    for member in tar:
        path = check_member_name(archive, member.name)
        if member.issym() or member.islnk():
            raise UserError(f"{archive}: member {member.name!r} is a link (to {member.linkname!r}); refused")
        if member.isdir():
            continue
        if not member.isfile():
            raise UserError(f"{archive}: member {member.name!r} is a device or fifo; refused")
        yield path, tar.extractfile(member).read()


def safe_zip_names(archive: Path, zf: zipfile.ZipFile) -> list[str]:
    """Names of a zip's regular files; symlinks and escaping names refused."""
    names = []
    for info in zf.infolist():
        check_member_name(archive, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{archive}: member {info.filename!r} is a symbolic link; refused")
        if not info.is_dir():
            names.append(info.filename)
    return names
