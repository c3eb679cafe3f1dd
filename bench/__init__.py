"""Benchmarks: speed and memory claims as scripts, run from the repository root as `python -m bench.<name>`."""
