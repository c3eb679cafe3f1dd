"""Archive safety (pipeline/data/formats/archives.py): members that would land outside the target are refused."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from pipeline.data.formats.archives import check_member_name, safe_zip_names
from pipeline.runtime import UserError


@pytest.mark.parametrize("name", ["/etc/passwd", "a/../../b", "..", "\\evil.sh", "C:evil.sh"])
def test_escaping_member_names_are_refused(name: str) -> None:
    with pytest.raises(UserError, match=r"a\.zip: member .* would land outside the target directory; refused"):
        check_member_name("a.zip", name)


def test_inner_member_name_is_its_path() -> None:
    assert check_member_name("a.zip", "mnist_png/training/1/0.png") == PurePosixPath("mnist_png/training/1/0.png")


def test_zip_lists_regular_files_and_refuses_links(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dir/", b"")
        zf.writestr("dir/file.amat", b"1 2\n")
    with zipfile.ZipFile(path) as zf:
        assert safe_zip_names(path, zf) == ["dir/file.amat"]
    link = zipfile.ZipInfo("dir/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(path) as zf, pytest.raises(UserError, match="'dir/link' is a symbolic link; refused"):
        safe_zip_names(path, zf)
