"""`python -m src.predict`: image files and folders classified by a trained model (pipeline/predict.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_error, run_module
from pipeline.data.parsed import load_parsed
from pipeline.data.split import load_split

JPEG_SIDE = 50  # the converted copies' size: not 28, not a multiple of it


def write_test_images(root: Path, out: Path, paper: bool) -> tuple[Path, np.ndarray]:
    """The mnist-5k test images as files named <row>_<label>: as they are (28x28 grayscale PNG, light on
    dark) or, with `paper`, as RGB JPEGs of JPEG_SIDE pixels with dark strokes on white."""
    data, test = load_parsed(root / "parsed"), load_split(root / "split")["test"]
    out.mkdir()
    for row in test:
        name = out / f"{row:05d}_{data.labels[row]}"
        if paper:
            image = Image.fromarray(255 - data.images[row]).resize((JPEG_SIDE, JPEG_SIDE), Image.Resampling.BICUBIC)
            image.convert("RGB").save(name.with_suffix(".jpg"), quality=90)
        else:
            Image.fromarray(data.images[row]).save(name.with_suffix(".png"))
    return out, data.labels[test]


def accuracy(records: list[dict]) -> float:
    return float(np.mean([r["class"] == Path(r["file"]).stem.split("_")[1] for r in records]))


def predict(*args: str | Path) -> tuple[int, str, str]:
    done = run_module("src.predict", *args, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_photos_of_paper_are_classified_as_well_as_the_originals(mnist5k_lenet: Path, tmp_path: Path) -> None:
    """Measured when written (LeNet, 3 epochs, the 1,000 test images of mnist-5k): originals 0.945,
    RGB JPEGs 50x50 with dark strokes on white 0.940 (the pipeline's 8-epoch LeNet: 0.968 and 0.967)."""
    weights = mnist5k_lenet / "lenet.pt"
    originals, labels = write_test_images(mnist5k_lenet, tmp_path / "originals", paper=False)
    photos, _ = write_test_images(mnist5k_lenet, tmp_path / "photos", paper=True)
    results = {}
    for name, folder in (("originals", originals), ("photos", photos)):
        code, out, err = predict("--weights", weights, folder, "--format", "json")
        assert code == 0, err
        records = json.loads(out)
        assert len(records) == len(labels)
        results[name] = accuracy(records)
    steps = records[0]["conversion"]
    assert [s.split()[0] for s in steps] == ["RGB", "inverted", "resized"], steps
    print(f"accuracy: originals {results['originals']:.3f}, RGB JPEGs on white {results['photos']:.3f}")
    assert results["originals"] > 0.9
    assert results["photos"] >= results["originals"] - 0.01, results


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Three usable images (a dark-on-light RGB JPEG, a grayscale PNG, an RGBA WebP) and one broken file."""
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    stroke = np.zeros((40, 30), np.uint8)
    stroke[8:32, 13:17] = 255
    Image.fromarray(255 - stroke).convert("RGB").save(folder / "one.jpg")
    Image.fromarray(stroke).save(folder / "sub" / "two.png")
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[stroke > 0] = (0, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(folder / "three.webp", lossless=True)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    (folder / "readme.txt").write_text("not looked at: not an image suffix")
    return folder


def test_table_csv_and_a_broken_file_among_many(mnist5k_lenet: Path, mixed_folder: Path, tmp_path: Path) -> None:
    weights = mnist5k_lenet / "lenet.pt"
    code, out, err = predict("--weights", weights, mixed_folder, "--topk", "2")
    assert code == 1, err  # classified, but one file skipped
    assert [line for line in err.splitlines() if line.startswith("skipped:")] == [
        f"skipped: {mixed_folder / 'broken.png'}: not a readable image (no image format Pillow knows; empty, "
        "truncated or another kind of file)"]
    header, *rows = out.splitlines()
    assert header.split() == ["file", "class", "prob", "top", "2", "conversion"]
    assert [row.split()[0] for row in rows] == [str(mixed_folder / n) for n in ("one.jpg", "sub/two.png", "three.webp")]
    assert "RGB to grayscale; inverted (light background" in rows[0] and "resized 30x40 to 21x28" in rows[0]
    assert "transparency flattened onto white" in rows[2]
    assert rows[0].split()[1] == rows[1].split()[1] == rows[2].split()[1]  # the same stroke, three ways

    output = tmp_path / "out.csv"
    code, out, err = predict("--weights", weights, mixed_folder / "one.jpg", "--topk", "3", "--output", output)
    assert code == 0 and out == "", err
    (row,) = list(csv.DictReader(io.StringIO(output.read_text())))
    assert list(row) == ["file", "class_1", "probability_1", "class_2", "probability_2", "class_3",
                         "probability_3", "conversion"]
    assert float(row["probability_1"]) >= float(row["probability_2"]) >= float(row["probability_3"])


def test_strict_makes_a_broken_file_fatal(mnist5k_lenet: Path, mixed_folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    code, out, err = predict("--weights", mnist5k_lenet / "lenet.pt", mixed_folder, "--strict", "--output", output)
    one_error(code, err, "broken.png: not a readable image", "--strict")
    assert not output.exists() and out == ""


@pytest.mark.parametrize(("case", "fragments"), [
    ("no images", ["no image files in"]),
    ("missing path", ["nowhere: no such file or folder"]),
    ("not weights", ["unreadable, not what the train stage writes"]),
    ("no weights", ["no such file"]),
    ("bad format", ["--format", "invalid choice: 'xml'"]),
    ("only broken", ["none of the 1 files is a usable image"]),
])
def test_bad_input_is_one_error_line(case: str, fragments: list[str], mnist5k_lenet: Path, tmp_path: Path) -> None:
    weights, image = mnist5k_lenet / "lenet.pt", tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "broken.jpg").write_bytes(b"")
    args = {"no images": [weights, tmp_path / "empty"], "missing path": [weights, tmp_path / "nowhere"],
            "not weights": [tmp_path / "junk.pt", image], "no weights": [tmp_path / "none.pt", image],
            "bad format": [weights, image, "--format", "xml"], "only broken": [weights, tmp_path / "broken.jpg"]}[case]
    code, out, err = predict("--weights", *args)
    one_error(code, err, *fragments)
    assert out == ""


def test_invert_forces_the_polarity(mnist5k_lenet: Path, tmp_path: Path) -> None:
    paper = np.full((28, 28), 255, np.uint8)
    paper[6:22, 12:16] = 0  # a dark bar on white: `auto` would invert it
    Image.fromarray(paper).save(tmp_path / "paper.png")
    steps = {}
    for invert in ("auto", "true", "false"):
        code, out, err = predict("--weights", mnist5k_lenet / "lenet.pt", tmp_path / "paper.png", "--format", "json",
                                 "--invert", invert)
        assert code == 0, err
        steps[invert] = json.loads(out)[0]["conversion"]
    assert steps == {"auto": ["inverted (light background: border median 255)"],
                     "true": ["inverted (invert: true)"], "false": []}
