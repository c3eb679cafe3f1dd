"""Stage entry points: a user mistake exits with status 2 and one `error:` line, and writes nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import one_error, run_module


def assert_one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit status 2, stderr exactly one `error: ...` line (nothing else), no traceback; returns that line."""
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    return one_error(proc.returncode, proc.stderr)


def test_train_bad_params(tmp_path: Path, params: dict[str, Any],
                          write_params: Callable[[dict[str, Any]], Path]) -> None:
    params["models"]["mlp"]["epochs"] = "ten"
    out, live = tmp_path / "models" / "mlp.pt", tmp_path / "live"
    proc = run_module("src.train", "--model", "mlp", "--parsed", tmp_path / "parsed", "--split", tmp_path / "split",
                     "--out", out, "--live", live, "--params", write_params(params))
    line = assert_one_error_line(proc)
    assert "models.mlp.epochs" in line and "'ten'" in line
    assert not out.exists() and not out.parent.exists() and not live.exists()


def test_download_unknown_dataset(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    line = assert_one_error_line(run_module("src.download", "--dataset", "nope", "--out", out))
    assert "'nope'" in line and "mnist-5k" in line
    assert list(tmp_path.iterdir()) == []


def test_evaluate_bad_rotations(tmp_path: Path, params: dict[str, Any],
                                write_params: Callable[[dict[str, Any]], Path]) -> None:
    params["evaluate"]["rotations"] = []
    outputs = [tmp_path / "out" / name for name in ("metrics.json", "details.json", "confusion.json",
                                                    "predictions.npz", "correct.json")]
    proc = run_module("src.evaluate", "--weights", tmp_path / "w.pt", "--parsed", tmp_path / "parsed",
                     "--split", tmp_path / "split", "--metrics", outputs[0], "--details", outputs[1],
                     "--confusion", outputs[2], "--predictions", outputs[3], "--correct", outputs[4],
                     "--params", write_params(params))
    line = assert_one_error_line(proc)
    assert "evaluate.rotations" in line and "at least 1" in line
    assert not (tmp_path / "out").exists()
