"""Datasets: where they come from (registry, sources), how they are read (formats), how they are split."""
