"""The image conversion predict and converted image folders share (pipeline/data/convert.py)."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.convert import BadImage, Conversion, border_median, convert_image, image_files, summarize

SIZE = (28, 28)


def digit(height: int = 28, width: int = 28) -> np.ndarray:
    """A light bar (the stroke) on black, uint8 (H, W), as MNIST draws a 1."""
    image = np.zeros((height, width), np.uint8)
    image[height // 5:height - height // 5, width // 2 - 2:width // 2 + 2] = 255
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def kinds(converted: object) -> list[str]:
    return [step.kind for step in converted.steps]


def test_dataset_like_image_is_used_as_is() -> None:
    converted = convert_image(encode(Image.fromarray(digit()), "PNG"), "d.png", Conversion(SIZE))
    np.testing.assert_array_equal(converted.image, digit())
    assert converted.steps == () and converted.describe() == "as is"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"])
def test_color_photo_of_paper_becomes_light_on_dark(fmt: str) -> None:
    """Dark strokes on white, RGB, twice the size: grayscale, inverted, resized back to the stroke."""
    paper = Image.fromarray(255 - np.kron(digit(), np.ones((2, 2), np.uint8))).convert("RGB")
    converted = convert_image(encode(paper, fmt), f"d.{fmt}", Conversion(SIZE))
    assert converted.image.shape == SIZE and converted.image.dtype == np.uint8
    assert kinds(converted)[-2:] == ["inverted", "resized"], converted.describe()
    assert "grayscale" in kinds(converted) or fmt == "GIF"  # a GIF of gray pixels is palette ("P") or L
    error = np.abs(converted.image.astype(int) - digit().astype(int))
    assert np.mean(error) < 4 and border_median(converted.image) == 0, converted.describe()


def test_aspect_ratio_is_kept_and_the_rest_is_background() -> None:
    wide = np.zeros((20, 60), np.uint8)
    wide[5:15, 5:55] = 200  # a light bar 50 wide on black
    converted = convert_image(encode(Image.fromarray(wide), "PNG"), "wide.png", Conversion(SIZE))
    assert kinds(converted) == ["resized", "padded"]
    assert "resized 60x20 to 28x9" in converted.describe()
    rows = np.flatnonzero(converted.image.max(axis=1) > 0)
    assert rows.min() >= 9 and rows.max() <= 18  # 9 rows of image centred in 28, black above and below


def test_grey_paper_gets_a_black_background() -> None:
    """Photographed paper is grey: after inversion its background is stretched to black, white kept."""
    paper = np.where(digit() > 0, 40, 200).astype(np.uint8)  # dark-grey strokes on light-grey paper
    converted = convert_image(encode(Image.fromarray(paper), "PNG"), "grey.png", Conversion(SIZE))
    assert kinds(converted) == ["inverted", "levels"] and "background 55 set to black" in converted.describe()
    np.testing.assert_array_equal(converted.image, np.where(digit() > 0, 204, 0))  # (215 - 55) * 255 / 200


@pytest.mark.parametrize(("invert", "flipped"), [("auto", False), ("true", True), ("false", False)])
def test_polarity_of_a_dark_background_image(invert: str, flipped: bool) -> None:
    converted = convert_image(encode(Image.fromarray(digit()), "PNG"), "d.png", Conversion(SIZE, invert))
    np.testing.assert_array_equal(converted.image, 255 - digit() if flipped else digit())


@pytest.mark.parametrize(("invert", "flipped"), [("auto", True), ("true", True), ("false", False)])
def test_polarity_of_a_light_background_image(invert: str, flipped: bool) -> None:
    converted = convert_image(encode(Image.fromarray(255 - digit()), "PNG"), "d.png", Conversion(SIZE, invert))
    np.testing.assert_array_equal(converted.image, digit() if flipped else 255 - digit())


@pytest.mark.parametrize(("stroke", "background"), [(0, "white"), (255, "black")])
def test_transparent_pixels_become_the_background_opposite_to_the_strokes(stroke: int, background: str) -> None:
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255 - stroke  # invisible: fully transparent
    rgba[digit() > 0] = (stroke, stroke, stroke, 255)
    converted = convert_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), "a.png", Conversion(SIZE))
    assert f"transparency flattened onto {background}" in converted.describe()
    np.testing.assert_array_equal(converted.image, digit())  # light on dark either way


@pytest.mark.parametrize("mode", ["1", "P", "I;16", "I", "F", "CMYK", "LA"])
def test_every_pixel_mode_reaches_8_bit_grayscale(mode: str) -> None:
    if mode == "I;16":
        image = Image.fromarray(digit().astype(np.uint16) * 257)
    elif mode in ("I", "F"):
        image = Image.fromarray(digit().astype(np.int32 if mode == "I" else np.float32))
    else:
        image = Image.fromarray(digit()).convert(mode)
    converted = convert_image(encode(image, "TIFF"), f"{mode}.tif", Conversion(SIZE))
    np.testing.assert_array_equal(converted.image, digit())


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: show it rotated 90 degrees clockwise
    image = Image.fromarray(np.rot90(digit(28, 28)[:, :14].copy()))  # 14x28 stored on its side
    converted = convert_image(encode(image.convert("RGB"), "JPEG", exif=exif), "photo.jpg", Conversion((28, 14)))
    assert kinds(converted)[0] == "exif" and converted.image.shape == (28, 14)


def png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (its CRC fixed): Pillow sees the size before decoding."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    body = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:33] = body + struct.pack(">I", zlib.crc32(body))
    return bytes(data)


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, what the error says)."""
    good = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)), "PNG")
    damaged = bytearray(good)
    damaged[60:200] = bytes(140)  # the image data zeroed: zlib's stream breaks
    return {
        "notes.png": (b"a text file, not an image\n", "no image format Pillow knows"),
        "empty.jpg": (b"", "no image format Pillow knows"),
        "truncated.png": (good[:len(good) // 2], "not a readable image"),
        "damaged.png": (bytes(damaged), "not a readable image"),
        "bomb.png": (png_with_size(30_000, 30_000), "decompression bomb"),  # above 2x MAX_IMAGE_PIXELS: an error
        "big.png": (png_with_size(10_000, 10_000), "decompression bomb"),  # above 1x: Pillow only warns
    }


@pytest.mark.parametrize("name", list(hostile_files()))
def test_hostile_files_are_refused_with_the_reason(name: str, tmp_path: Path) -> None:
    content, reason = hostile_files()[name]
    (tmp_path / name).write_bytes(content)
    for source in (content, tmp_path / name):
        with pytest.raises(BadImage, match=reason) as caught:
            convert_image(source, name, Conversion(SIZE))
        assert str(caught.value).startswith(f"{name}: ")


def test_summary_counts_steps_and_lists_the_images_auto_inverted() -> None:
    paper, dark = Image.fromarray(255 - digit()).convert("RGB"), Image.fromarray(digit())
    conversion = Conversion(SIZE)
    converted = [convert_image(encode(paper, "PNG"), "a", conversion), convert_image(encode(dark, "PNG"), "b", conversion)]
    assert summarize(["a/1.png", "b/2.png"], converted, conversion) == {
        "size": [28, 28], "invert": "auto", "images": 2, "steps": {"grayscale": 1, "inverted": 1},
        "inverted": ["a/1.png"]}


def test_image_files_searches_folders_for_images_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/2.PNG", "a/1.jpg", "a/notes.txt", "a/.hidden/3.png", "b.dat"):
        (tmp_path / name).write_bytes(b"")
    assert image_files([tmp_path / "a", tmp_path / "b.dat"]) == [tmp_path / "a/1.jpg", tmp_path / "a/2.PNG",
                                                                  tmp_path / "b.dat"]


# ---------------------------------------------------------------- user folders with conversion options

def write_photo_folder(root: Path) -> None:
    """Two classes of mixed images: RGB JPEGs of dark strokes on white, of two sizes, and a grayscale PNG."""
    for label, width in (("bar", 4), ("block", 12)):
        (root / label).mkdir(parents=True)
        stroke = np.zeros((28, 28), np.uint8)
        stroke[6:22, 14 - width // 2:14 + width // 2] = 255
        Image.fromarray(255 - stroke).convert("RGB").resize((56, 56)).save(root / label / "photo.jpg", quality=95)
        Image.fromarray(255 - stroke).convert("RGB").resize((40, 30)).save(root / label / "wide.jpg", quality=95)
        Image.fromarray(stroke).save(root / label / "scan.png")


def test_converted_folder_through_the_stages(tmp_path: Path) -> None:
    """folder (with image_conversion options) -> download -> parse: color, mixed-size images converted the way
    predict converts them, and what was done recorded in the parsed meta.json; without options, refused."""
    from conftest import committed_params_dict, dump_params, one_error, run_module
    from pipeline.io import read_json

    write_photo_folder(tmp_path / "mine")
    params = committed_params_dict()
    params["image_folders"] = {"mine": str(tmp_path / "mine")}
    params["image_conversion"] = {"mine": {"size": 28, "invert": "auto"}}
    dump_params(params, tmp_path / "params.yaml")
    done = run_module("src.folder", "--name", "mine", "--source", tmp_path / "mine", "--out", tmp_path / "folders/mine",
                      "--params", tmp_path / "params.yaml")
    assert done.returncode == 0, done.stderr
    assert run_module("src.download", "--dataset", "mine", "--folders", tmp_path / "folders",
                      "--out", tmp_path / "raw").returncode == 0
    done = run_module("src.parse", "--dataset", "mine", "--raw", tmp_path / "raw", "--out", tmp_path / "parsed")
    assert done.returncode == 0, done.stderr
    meta = read_json(tmp_path / "parsed" / "meta.json")
    assert meta["classes"] == ["bar", "block"] and meta["image_size"] == [28, 28] and meta["num_images"] == 6
    assert meta["conversion"] == {"size": [28, 28], "invert": "auto", "images": 6,
                                  "steps": {"grayscale": 4, "inverted": 4, "padded": 2, "resized": 4},
                                  "inverted": ["bar/photo.jpg", "bar/wide.jpg", "block/photo.jpg", "block/wide.jpg"]}
    images = np.load(tmp_path / "parsed" / "images.npy")
    assert all(border_median(image) == 0 for image in images)  # every image light on dark, as MNIST is

    # The short form: the same folder without options is held to 8-bit grayscale of one size, as before.
    done = run_module("src.folder", "--name", "mine", "--source", tmp_path / "mine", "--out", tmp_path / "strict/mine")
    assert done.returncode == 0 and not (tmp_path / "strict/mine/conversion.json").exists()
    assert run_module("src.download", "--dataset", "mine", "--folders", tmp_path / "strict",
                      "--out", tmp_path / "raw2").returncode == 0
    done = run_module("src.parse", "--dataset", "mine", "--raw", tmp_path / "raw2", "--out", tmp_path / "parsed2")
    one_error(done.returncode, done.stderr, "photo.jpg: image mode RGB, expected 8-bit grayscale", "image_conversion")


@pytest.mark.parametrize(("conversion", "reason"), [
    ({"other": {"size": 28}}, "image_conversion.other: no image_folders entry of that name"),
    ({"mine": {"invert": "yes"}}, "image_conversion.mine.invert: must be auto, true or false (got 'yes')"),
    ({"mine": {"size": [28]}}, "image_conversion.mine.size: must be a positive side in pixels, or [height, width]"),
    ({"mine": {"sise": 28}}, "image_conversion.mine.sise: unknown key; valid keys: size, invert"),
])
def test_conversion_params_are_checked(conversion: dict, reason: str, tmp_path: Path) -> None:
    from conftest import committed_params_dict, dump_params
    from pipeline.config import load_params
    from pipeline.runtime import UserError

    params = committed_params_dict()
    params["image_folders"], params["image_conversion"] = {"mine": "/data/mine"}, conversion
    with pytest.raises(UserError, match=re.escape(reason)):
        load_params(dump_params(params, tmp_path / "params.yaml"))
