"""Bring the images people have to what an MNIST-family model was trained on, and say what was done.

One conversion serves `python -m src.predict` and user image folders given conversion options
(params.yaml image_conversion): any format Pillow reads (PNG, JPEG, BMP, TIFF, WebP, GIF...), any size,
color or grayscale, with or without alpha, either polarity -> uint8 (H, W) grayscale with light strokes
on a dark background, the aspect ratio kept and the rest padded with the background. Steps, in order:
EXIF orientation, grayscale (alpha flattened), polarity, levels (background to black), resize, pad. NumPy and Pillow only: predict
with an .onnx model runs without torch.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from pipeline.runtime import brief

if TYPE_CHECKING:
    from PIL import Image

Invert = Literal["auto", "true", "false"]
INVERT_CHOICES: tuple[Invert, ...] = ("auto", "true", "false")
# A file suffix that marks an image when a folder is searched (a file named on its own is always tried).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pbm")
# What Pillow raises on a damaged, truncated or hostile file: its own errors are OSError subclasses
# (UnidentifiedImageError, "image file is truncated"); plugins also raise these on malformed headers.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, MemoryError)


class BadImage(Exception):
    """A file that cannot be used as an image: damaged, truncated, not an image, or too large."""


@dataclass(frozen=True)
class Conversion:
    """What every image is brought to."""

    size: tuple[int, int]  # (H, W) of the output
    invert: Invert = "auto"  # auto: invert an image whose border is light; true / false: always / never

    def to_dict(self) -> dict[str, object]:
        return {"size": list(self.size), "invert": self.invert}


class Step(NamedTuple):
    kind: str  # exif | grayscale | alpha | inverted | levels | resized | padded
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Converted:
    image: np.ndarray  # uint8 (H, W), light strokes on dark
    steps: tuple[Step, ...]  # what was done, in order; empty: the image was used as it is

    def describe(self) -> str:
        return "; ".join(map(str, self.steps)) or "as is"


def open_image(source: bytes | Path, name: str, upright: bool = True) -> tuple[Image.Image, bool]:
    """Decode `source` fully (the first frame of an animation), turned upright by its EXIF orientation
    unless `upright` is False; returns (image, whether it was turned). Refuses what Pillow flags as a decompression bomb (more
    pixels than Image.MAX_IMAGE_PIXELS) before decoding; BadImage names the file and the reason."""
    from PIL import Image, ImageOps  # imported here: the data stages of built-in datasets never need Pillow

    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS (and raises above twice that): refuse both, before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                image.load()
                if upright and _exif_rotation(image):
                    return ImageOps.exif_transpose(image), True
                return image.copy(), False
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{name}: too large to be an image worth decoding (over {Image.MAX_IMAGE_PIXELS:,} pixels, "
                       "Pillow's MAX_IMAGE_PIXELS: a decompression bomb?)") from None
    except Image.UnidentifiedImageError:
        raise BadImage(f"{name}: not a readable image (no image format Pillow knows; empty, truncated or "
                       "another kind of file)") from None
    except DECODE_ERRORS as err:
        raise BadImage(f"{name}: not a readable image ({brief(err, 120)})") from None


def _exif_rotation(image: Image.Image) -> bool:
    """Whether the EXIF orientation tag asks for a turn or a flip (phone photos carry it)."""
    return image.getexif().get(0x0112, 1) not in (1, None)


def grayscale(image: Image.Image) -> tuple[np.ndarray, list[Step]]:
    """Any Pillow mode -> uint8 (H, W). Transparent pixels become the background, chosen opposite in
    brightness to the opaque content (dark strokes on a transparent sheet land on white)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, np.uint8), []
    if mode.startswith("I;16") or mode in ("I", "F"):  # 16-bit, 32-bit integer or float pixels
        pixels = np.asarray(image, np.float64)
        high = pixels.max(initial=0)
        scale = 255 / 65535 if mode != "F" and high > 255 else (255.0 if mode == "F" and high <= 1 else 1.0)
        return _to_uint8(pixels * scale), [Step("grayscale", f"{mode} pixels to 8-bit grayscale")]
    if "A" in mode or "a" in mode or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA").convert("LA"), np.float64)  # (H, W, 2): gray, alpha
        gray, alpha = rgba[..., 0], rgba[..., 1] / 255
        if alpha.min() == 1:  # an alpha channel, but every pixel opaque
            return _to_uint8(gray), [] if mode in ("LA", "La") else [Step("grayscale", f"{mode} to grayscale")]
        opaque = alpha.sum()
        content = (gray * alpha).sum() / opaque if opaque else 0.0
        background = 0.0 if content > 127.5 else 255.0
        steps = [Step("alpha", f"transparency flattened onto {'black' if background == 0 else 'white'}")]
        if mode not in ("LA", "La"):
            steps.insert(0, Step("grayscale", f"{mode} to grayscale"))
        return _to_uint8(gray * alpha + background * (1 - alpha)), steps
    try:
        gray = image.convert("L") if mode in ("1", "P", "RGB", "RGBX", "CMYK", "YCbCr") else image.convert("RGB").convert("L")
    except ValueError as err:  # a mode Pillow cannot convert (LAB, HSV...)
        raise BadImage(f"image mode {mode} cannot be converted to grayscale ({err})") from None
    return np.asarray(gray, np.uint8), [Step("grayscale", f"{mode} to grayscale")]


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def border_median(image: np.ndarray) -> int:
    """Median of the outermost rows and columns of uint8 (H, W): the background of a centred object."""
    ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return int(np.median(ring))


def polarity(image: np.ndarray, invert: Invert) -> tuple[np.ndarray, list[Step]]:
    """Light strokes on dark, as MNIST and Fashion-MNIST are: `auto` inverts an image whose border is light."""
    if invert == "false":
        return image, []
    if invert == "true":
        return 255 - image, [Step("inverted", "inverted (invert: true)")]
    background = border_median(image)
    if background <= 127:
        return image, []
    return 255 - image, [Step("inverted", f"inverted (light background: border median {background})")]


def levels(image: np.ndarray) -> tuple[np.ndarray, list[Step]]:
    """Stretch the pixel values so the background (the border median) is black and white stays white, as
    in MNIST, whose background is 0: photographed paper is grey, not white. A no-op on dataset images."""
    background = border_median(image)
    if background == 0 or background == 255:  # already black; or nothing but background
        return image, []
    stretched = (image.astype(np.float64) - background) * (255 / (255 - background))
    return _to_uint8(stretched), [Step("levels", f"background {background} set to black")]


def fit(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, list[Step]]:
    """Resize uint8 (h, w) to fit inside (H, W) with its aspect ratio kept, then pad it with its own
    background (the border median) to exactly (H, W), centred."""
    from PIL import Image

    (h, w), (height, width) = image.shape, size
    scale = min(height / h, width / w)
    new_h, new_w = max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale)))
    steps = []
    if (new_h, new_w) != (h, w):
        # Pillow widens the filter when it shrinks, so a large photo is averaged down, not aliased.
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR), np.uint8)
        steps.append(Step("resized", f"resized {w}x{h} to {new_w}x{new_h}"))
    if (new_h, new_w) != (height, width):
        background = border_median(image)
        canvas = np.full((height, width), background, np.uint8)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        canvas[top:top + new_h, left:left + new_w] = image
        image = canvas
        steps.append(Step("padded", f"padded to {width}x{height} with the background ({background})"))
    return image, steps


def convert_image(source: bytes | Path, name: str, conversion: Conversion) -> Converted:
    """One image file -> what the model takes (uint8 (H, W)) and the steps that got it there."""
    image, turned = open_image(source, name)
    steps = [Step("exif", "turned upright (EXIF orientation)")] if turned else []
    try:
        pixels, gray_steps = grayscale(image)
    except BadImage as err:
        raise BadImage(f"{name}: {err}") from None
    pixels, invert_steps = polarity(pixels, conversion.invert)
    pixels, level_steps = levels(pixels)
    pixels, fit_steps = fit(pixels, conversion.size)
    return Converted(pixels, tuple(steps + gray_steps + invert_steps + level_steps + fit_steps))


def summarize(names: list[str], converted: list[Converted], conversion: Conversion) -> dict[str, object]:
    """What was done to a folder, for its parsed meta.json: the options, how many images each kind of
    step touched, and (polarity being decided per image under `auto`) which images were inverted."""
    counts = Counter(step.kind for item in converted for step in item.steps)
    summary: dict[str, object] = {**conversion.to_dict(), "images": len(converted), "steps": dict(sorted(counts.items()))}
    if conversion.invert == "auto":
        summary["inverted"] = [name for name, item in zip(names, converted)
                               if any(step.kind == "inverted" for step in item.steps)]
    return summary


def image_files(paths: list[Path]) -> list[Path]:
    """The files named, plus every image file (by suffix, hidden ones left out) under the folders named,
    sorted within each folder."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            found.append(path)
    return found
