"""One thin entry point per pipeline stage: `python -m src.<stage> --help`."""
