"""The cross-model report: its rows read from a results tree, the curves TSV and the markdown summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_dvclive_tree
from pipeline.config import HEADLINE_ROTATION
from pipeline.history import read_dvclive_history
from pipeline.outcomes import Outcomes, encode
from pipeline.report import ReportRow, curve_rows, paired_section, read_results, render_summary, write_curves
from pipeline.runtime import UserError
from pipeline.stats import compare, holm


INTERVALS = {"accuracy": {"estimate": 0.9, "low": 0.8, "high": 0.95, "method": "wilson"},
             "loss": {"estimate": 0.25, "low": 0.2, "high": 0.3, "method": "percentile bootstrap"}}


def write_results(folder: Path, accuracy: float, rotated: dict[str, float]) -> None:
    """What the train and evaluate stages leave in results/<dataset>/<model>/, with 3 epochs of dvclive log."""
    write_dvclive_tree(folder / "train", epochs=3)
    (folder / "train" / "metrics.json").write_text(json.dumps({"best_epoch": 2, "train_time_s": 1.5}))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "loss": 0.25, "ece": 0.03,
                                                     "throughput_images_per_s": 1000.0}))
    (folder / "details.json").write_text(json.dumps({"rotation_accuracy": rotated, "num_parameters": 1234,
                                                     "intervals": INTERVALS}))
    correct = np.arange(100) < round(accuracy * 100)
    (folder / "correct.json").write_text(json.dumps(encode(Outcomes("sha256:t", correct), np.zeros(100, int), ["a"])))


def test_read_results(tmp_path: Path) -> None:
    write_results(tmp_path / "ds" / "mlp", 0.9, {"0": 0.9, str(HEADLINE_ROTATION): 0.4})
    write_results(tmp_path / "ds" / "lenet", 0.95, {"0": 0.95})
    results = read_results(tmp_path, ["ds"], ["mlp", "lenet"])
    intervals = {"accuracy": (0.8, 0.95), "loss": (0.2, 0.3)}
    assert results.rows == [ReportRow("ds", "mlp", 0.9, 0.25, 0.03, 0.4, 1234, 2, 3, intervals),
                            ReportRow("ds", "lenet", 0.95, 0.25, 0.03, None, 1234, 2, 3, intervals)]
    assert results.outcomes["ds"]["lenet"].correct.sum() == 95
    assert results.robustness == {"ds": {"mlp": {0.0: 0.9, float(HEADLINE_ROTATION): 0.4}, "lenet": {0.0: 0.95}}}
    assert list(results.histories["ds"]) == ["mlp", "lenet"]
    write_curves(tmp_path / "curves.tsv", results.histories)
    with open(tmp_path / "curves.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(row["series"], row["epoch"]) for row in rows] == [("ds/mlp", "1"), ("ds/mlp", "2"), ("ds/mlp", "3"),
                                                                ("ds/lenet", "1"), ("ds/lenet", "2"), ("ds/lenet", "3")]
    (tmp_path / "ds" / "lenet" / "correct.json").write_text("{}")
    with pytest.raises(UserError, match=r"correct.json: unreadable"):
        read_results(tmp_path, ["ds"], ["mlp", "lenet"])
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
    with_intervals = ReportRow("ds", "mlp", 0.968, 0.1256, 0.0105, 0.5, 1, 1, 1,
                               {"accuracy": (0.95517, 0.9772), f"accuracy_rotated_{HEADLINE_ROTATION}": (0.4, 0.6)})
    assert table_rows(render_summary([with_intervals], {}))[0][2:6] == [
        "0.9680 [0.9552, 0.9772]", "0.1256", "0.0105", "0.5000 [0.4000, 0.6000]"]


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


def test_paired_section() -> None:
    """Each pair, best first: the difference, its interval, the discordant counts, McNemar's p and Holm's, and
    in words which pairs are detectable."""
    rng = np.random.default_rng(0)
    mlp = rng.random(1000) < 0.90
    lenet = mlp.copy()
    lenet[np.flatnonzero(~mlp)[:45]] = True  # 45 of mlp's mistakes right, none of its successes lost
    resnet = lenet.copy()
    resnet[np.flatnonzero(~lenet)[:3]] = True
    outcomes = {name: Outcomes("sha256:t", right) for name, right in
                (("resnet", resnet), ("lenet", lenet), ("mlp", mlp))}
    lines = paired_section(["resnet", "lenet", "mlp"], outcomes)
    body = table_rows("\n".join(lines))
    assert [(cells[0], cells[1]) for cells in body] == [("resnet", "lenet"), ("resnet", "mlp"), ("lenet", "mlp")]
    tests = [compare(lenet, resnet), compare(mlp, resnet), compare(mlp, lenet)]
    adjusted = holm([test.p for test in tests])
    for cells, test, p_holm in zip(body, tests, adjusted):
        assert cells[2:] == [test.difference.format(sign=True), str(test.table.first_only),
                             str(test.table.second_only), f"{test.p:.3g}", f"{p_holm:.3g}"]
    words = lines[-1]
    assert "resnet is better than mlp, lenet is better than mlp." in words
    assert "Not detectable: resnet vs lenet" in words
    outcomes["mlp"] = Outcomes("sha256:other", mlp)  # another test set: never paired
    assert [(c[0], c[1]) for c in table_rows("\n".join(paired_section(["resnet", "lenet", "mlp"], outcomes)))] == [
        ("resnet", "lenet")]
