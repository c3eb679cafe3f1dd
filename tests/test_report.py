"""The cross-model report: its rows read from a results tree, the curves TSV and the markdown summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import write_dvclive_tree
from pipeline.config import HEADLINE_ROTATION
from pipeline.history import read_dvclive_history
from pipeline.report import ReportRow, curve_rows, read_results, render_summary, write_curves
from pipeline.runtime import UserError


def write_results(folder: Path, accuracy: float, rotated: dict[str, float]) -> None:
    """What the train and evaluate stages leave in results/<dataset>/<model>/, with 3 epochs of dvclive log."""
    write_dvclive_tree(folder / "train", epochs=3)
    (folder / "train" / "metrics.json").write_text(json.dumps({"best_epoch": 2, "train_time_s": 1.5}))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "loss": 0.25, "ece": 0.03,
                                                     "throughput_images_per_s": 1000.0}))
    (folder / "details.json").write_text(json.dumps({"rotation_accuracy": rotated, "num_parameters": 1234}))


def test_read_results(tmp_path: Path) -> None:
    write_results(tmp_path / "ds" / "mlp", 0.9, {"0": 0.9, str(HEADLINE_ROTATION): 0.4})
    write_results(tmp_path / "ds" / "lenet", 0.95, {"0": 0.95})
    results = read_results(tmp_path, ["ds"], ["mlp", "lenet"])
    assert results.rows == [ReportRow("ds", "mlp", 0.9, 0.25, 0.03, 0.4, 1234, 2, 3),
                            ReportRow("ds", "lenet", 0.95, 0.25, 0.03, None, 1234, 2, 3)]
    assert results.robustness == {"ds": {"mlp": {0.0: 0.9, float(HEADLINE_ROTATION): 0.4}, "lenet": {0.0: 0.95}}}
    assert list(results.histories["ds"]) == ["mlp", "lenet"]
    write_curves(tmp_path / "curves.tsv", results.histories)
    with open(tmp_path / "curves.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(row["series"], row["epoch"]) for row in rows] == [("ds/mlp", "1"), ("ds/mlp", "2"), ("ds/mlp", "3"),
                                                                ("ds/lenet", "1"), ("ds/lenet", "2"), ("ds/lenet", "3")]
    (tmp_path / "ds" / "lenet" / "details.json").unlink()
    with pytest.raises(UserError, match=r"lenet: no details.json \(run the evaluate stage first\)"):
        read_results(tmp_path, ["ds"], ["mlp", "lenet"])


def test_curve_rows(tmp_path: Path) -> None:
    write_dvclive_tree(tmp_path / "live", epochs=3)
    history = read_dvclive_history(tmp_path / "live")
    rows = curve_rows({"synthetic/mlp": history, "synthetic/lenet": history})
    assert len(rows) == 6
    assert rows[0] == {"series": "synthetic/mlp", "epoch": 1, "train_accuracy": 0.5, "train_loss": 1.0,
                       "val_accuracy": 0.6, "val_loss": 1.1}
    assert [row["epoch"] for row in rows] == [1, 2, 3, 1, 2, 3]


def row(dataset: str, model: str, accuracy: float, rotated: float | None = 0.5) -> ReportRow:
    return ReportRow(dataset, model, test_accuracy=accuracy, test_loss=1 - accuracy, ece=0.01234,
                     rotated_accuracy=rotated, num_parameters=44426, best_epoch=7, epochs=20)


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of the table's body rows (after the header and its separator)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[1].startswith("|---")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_render_summary_sorted_best_first() -> None:
    rows = [row("mnist-5k", "mlp", 0.95), row("fashion", "lenet", 0.88), row("mnist-5k", "lenet", 0.98126, None),
            row("fashion", "mlp", 0.91)]
    body = table_rows(render_summary(rows, {}))
    assert len(body) == len(rows)
    assert [(cells[0], cells[1]) for cells in body] == [
        ("fashion", "mlp"), ("fashion", "lenet"), ("mnist-5k", "lenet"), ("mnist-5k", "mlp")]
    assert body[2] == ["mnist-5k", "lenet", "0.9813", "0.0187", "0.0123", "–", "44,426", "7 / 20"]
    assert body[3][5] == "0.5000"


def test_render_summary_header_and_figures() -> None:
    markdown = render_summary([row("mnist-5k", "mlp", 0.5)],
                              {"mnist-5k": [("rotation robustness", "figures/mnist-5k-rotation.png")]})
    assert markdown.startswith("# Results\n")
    header = [line for line in markdown.splitlines() if line.startswith("|")][0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "dataset", "model", "test accuracy", "test loss", "ECE", f"accuracy at {HEADLINE_ROTATION}°", "parameters",
        "best epoch"]
    assert "![rotation robustness](figures/mnist-5k-rotation.png)" in markdown
    assert "[mlp](../results/mnist-5k/mlp/figures/)" in markdown
