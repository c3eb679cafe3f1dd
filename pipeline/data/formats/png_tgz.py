"""fastai's mnist_png.tgz (mnist-png): [mnist_png/]training|testing/<label>/<n>.png, read from the stream."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

from pipeline.data.formats.archives import safe_tar_files
from pipeline.data.formats.base import Parsed, check_arrays, concatenate
from pipeline.data.formats.image_folder import decode_classes
from pipeline.data.registry import DatasetSpec
from pipeline.runtime import UserError

PNG_SUBSETS = (("train", "training"), ("test", "testing"))  # (subset, directory) in fastai's mnist_png.tgz


def read_png_tgz(spec: DatasetSpec, raw_dir: Path) -> Parsed:
    """fastai's mnist_png.tgz: [mnist_png/]training/<label>/*.png and [mnist_png/]testing/<label>/*.png."""
    path = raw_dir / spec.files[0].stored_name
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {directory: {} for _, directory in PNG_SUBSETS}
    try:
        with tarfile.open(path, "r|gz") as tar:
            for member, data in safe_tar_files(path, tar):
                parts = member.parts[-3:]
                if len(member.parts) not in (3, 4) or parts[0] not in found or parts[1] not in spec.classes:
                    raise UserError(f"{path}: unexpected member {str(member)!r}; expected "
                                    f"[mnist_png/]training|testing/<{'|'.join(spec.classes)}>/<image>")
                found[parts[0]].setdefault(parts[1], []).append((f"{path}:{member}", data))
    except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
        raise UserError(f"{path}: not a readable .tgz archive ({err}); truncated?") from None
    parts = [(subset, *decode_classes(found[directory], spec.classes, spec.image_size, f"{path}:{directory}"))
             for subset, directory in PNG_SUBSETS]
    for subset, images, labels in parts:
        check_arrays(spec, images, labels, f"{path}:{subset}")
    return concatenate(spec, parts)
