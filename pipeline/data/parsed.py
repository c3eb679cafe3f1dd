"""The parsed form of a dataset on disk, shared by every stage after parse.

data/parsed/<ds>/: images.npy uint8 (N, H, W), labels.npy int64 (N,), meta.json (class names,
official partition as row ranges, the transforms that keep a label). uint8 keeps it 4x smaller than float; normalisation happens
on the device at training time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.io import atomic_dir, read_json, reading, write_json
from pipeline.runtime import UserError


@dataclass
class ParsedDataset:
    name: str
    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 (N,)
    classes: list[str]
    official: dict[str, tuple[int, int]] = field(default_factory=dict)  # subset -> [start, stop) rows
    conversion: dict[str, object] | None = None  # what was done to a converted image folder's images
    # The transforms that keep a label (registry.LABEL_KEEPING: "flip", "shift"), as the registry or
    # params.yaml states them: training's `augment_flip: auto` and test-time augmentation follow them.
    keeps_label: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) as models take it: grayscale, one channel."""
        return (1, *self.images.shape[1:])


def save_parsed(data: ParsedDataset, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "images.npy", data.images)
        np.save(tmp / "labels.npy", data.labels)
        write_json(tmp / "meta.json", {
            "dataset": data.name,
            "classes": data.classes,
            "num_images": len(data.labels),
            "image_size": list(data.images.shape[1:]),
            "official": {subset: list(rows) for subset, rows in data.official.items()},
            **({"conversion": data.conversion} if data.conversion is not None else {}),
            "keeps_label": list(data.keeps_label),
        })


def load_parsed(in_dir: Path) -> ParsedDataset:
    in_dir = Path(in_dir)
    if not (in_dir / "meta.json").is_file():
        raise UserError(f"{in_dir}: no parsed dataset here (run the parse stage first)")
    with reading(in_dir, "parse"):
        meta = read_json(in_dir / "meta.json")
        return ParsedDataset(
            name=meta["dataset"],
            images=np.load(in_dir / "images.npy", allow_pickle=False),
            labels=np.load(in_dir / "labels.npy", allow_pickle=False),
            classes=meta["classes"],
            official={subset: tuple(rows) for subset, rows in meta["official"].items()},
            keeps_label=tuple(meta["keeps_label"]),
        )
