"""Gaps to the retrained model against a hand-computed case."""

from __future__ import annotations

import math

import pytest

from eval.gaps import avg_gap, gaps


def test_gaps_and_average_by_hand():
    method = {"remain_acc": 99.0, "forget_acc": 2.0, "test_acc": 90.0, "mia": 0.30, "test_forget_acc": 1.0}
    retrain = {"remain_acc": 98.0, "forget_acc": 0.0, "test_acc": 91.5, "mia": 0.25, "test_forget_acc": 0.0}
    gap = gaps(method, retrain)
    assert gap == pytest.approx({"remain_acc": 1.0, "forget_acc": 2.0, "test_acc": 1.5, "mia": 0.05,
                                 "test_forget_acc": 1.0})
    # (2.0 + 1.0 + 1.5 + 5.0) / 4: MIA in percentage points
    assert avg_gap(gap) == pytest.approx(2.375)


def test_gap_of_nan_is_nan():
    gap = gaps({"remain_acc": float("nan")}, {"remain_acc": 50.0})
    assert math.isnan(gap["remain_acc"])
