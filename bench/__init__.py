"""Benchmarks: speed and memory claims as scripts, run from the repository root as `python -m bench.<name>`."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: params.yaml, data/, .dvc/
