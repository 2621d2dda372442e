"""Distance of a method's metrics to the retrained model's on the same split.

``avg_gap`` is modelled on the "Avg. Gap" of SalUn / Unlearn-Sparse, with this protocol's
metrics: the mean absolute gap over D_f, D_r and D_t accuracy and the release's MIA, all in
percentage points (the MIA score, a fraction, is scaled by 100 first), per seed. It is the tuning
objective and the tables' ``avg gap``. SalUn's own (``salun_avg_gap``) differs in three ways:
its class-wise test accuracy leaves the forgotten class out of the test set
(``Classification/dataset.py`` in OPTML-Group/Unlearn-Saliency keeps ``test_set.targets !=
class_to_replace``), so it is D_t,r there; its MIA is MIA-efficacy; and it takes the gap of the
seed means, not the mean of per-seed gaps. The gap tables show both.
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


def salun_avg_gap(means: dict[str, float | None], reference: dict[str, float | None], scenario: str) -> float:
    """SalUn's Avg. Gap from seed means: |UA|, |RA|, |TA| and |MIA-efficacy| (x 100) gaps, averaged;
    TA is D_t,r in class removal (the forgotten class is out of SalUn's test set), else D_t. NaN when
    a mean is missing (no MIA-efficacy in ``mia_attacks``, or a diverged seed)."""
    test = "test_remain_acc" if scenario == "class" else "test_acc"
    keys = ("forget_acc", "remain_acc", test, "mia_efficacy")
    parts = [abs(stored_number(means.get(k)) - stored_number(reference.get(k)))
             * (100.0 if k == "mia_efficacy" else 1.0) for k in keys]
    return math.fsum(parts) / len(parts)


def avg_gap(gap: dict[str, float]) -> float:
    """Mean of the AVG_GAP_KEYS gaps in percentage points."""
    parts = [gap[k] * (100.0 if k == "mia" else 1.0) for k in AVG_GAP_KEYS]
    return math.fsum(parts) / len(parts)
