"""Distance of a method's metrics to the retrained model's on the same split.

``avg_gap`` follows the "Avg. Gap" of SalUn / Unlearn-Sparse: the mean absolute gap over
forget accuracy, remain accuracy, test accuracy and MIA, all in percentage points (the
MIA score, a fraction, is scaled by 100 first).
"""

from __future__ import annotations

import math

AVG_GAP_KEYS = ("forget_acc", "remain_acc", "test_acc", "mia")


def stored_number(value: float | None) -> float:
    """A metric as a float: a stored cell's NaN reads back as null."""
    return math.nan if value is None else value


def gaps(metrics: dict[str, float | None], reference: dict[str, float | None]) -> dict[str, float]:
    """|metric - reference| for every key both have (NaN where either is NaN or null)."""
    return {k: abs(stored_number(metrics[k]) - stored_number(reference[k])) for k in metrics if k in reference}


def avg_gap(gap: dict[str, float]) -> float:
    """Mean of the AVG_GAP_KEYS gaps in percentage points."""
    parts = [gap[k] * (100.0 if k == "mia" else 1.0) for k in AVG_GAP_KEYS]
    return math.fsum(parts) / len(parts)
