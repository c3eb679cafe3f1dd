"""Readers from raw published files to arrays: images uint8 (N, H, W), labels int64 (N,); one module per format.

Each reader also returns the official partition as {subset: (start, stop)} row ranges, empty when
the dataset has none (then the split stage draws the test set itself), and the class names.
Archives are read in memory, never extracted (archives.py refuses members that could escape).
readers.py maps each DatasetSpec.format to its reader.
"""
