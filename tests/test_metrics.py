"""Metrics of predictions (NumPy only): confusion matrix and records, top confusions, calibration, row samples."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import (
    calibration_bins,
    confusion_matrix,
    confusion_records,
    evenly_spaced,
    expected_calibration_error,
    top_confusions,
)


def test_confusion_matrix_counts() -> None:
    labels, predictions = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 0, 2, 2])
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3), [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert confusion_records(labels[:2], predictions[:2], ["zero", "one", "two"]) == [
        {"actual": "zero", "predicted": "zero"}, {"actual": "zero", "predicted": "one"}]


def test_calibration_bins_and_ece_by_hand() -> None:
    confidence = np.array([0.05, 0.95, 0.95, 0.55, 1.0])
    correct = np.array([False, True, False, True, True])
    bins = calibration_bins(confidence, correct, bins=10)
    np.testing.assert_array_equal(bins["count"], [1, 0, 0, 0, 0, 1, 0, 0, 0, 3])  # 1.0 falls in the last bin
    np.testing.assert_allclose(bins["confidence"][[0, 5, 9]], [0.05, 0.55, (0.95 + 0.95 + 1.0) / 3])
    np.testing.assert_allclose(bins["accuracy"][[0, 5, 9]], [0.0, 1.0, 2 / 3])
    # (1 * 0.05 + 1 * 0.45 + 3 * |2/3 - 0.9667|) / 5
    assert expected_calibration_error(bins) == pytest.approx((0.05 + 0.45 + 3 * (2.9 / 3 - 2 / 3)) / 5)
    calibrated = calibration_bins(np.full(100, 0.7), np.arange(100) < 70, bins=15)
    assert expected_calibration_error(calibrated) == pytest.approx(0.0)


def test_top_confusions() -> None:
    matrix = np.array([[50, 3, 0], [7, 40, 1], [0, 3, 9]])
    assert top_confusions(matrix, ["a", "b", "c"], 3) == {"1": {"pair": "b -> a", "count": 7},
                                                          "2": {"pair": "a -> b", "count": 3},
                                                          "3": {"pair": "c -> b", "count": 3}}
    assert top_confusions(np.diag([5, 5]), ["a", "b"], 3) == {}  # no mistakes, nothing listed


def test_evenly_spaced() -> None:
    np.testing.assert_array_equal(evenly_spaced(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(evenly_spaced(3, 10), [0, 1, 2])
    assert len(evenly_spaced(0, 5)) == 0
