"""Per-seed rows -> mean and std, a printed table and the results.json document."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from config import Config

RESULT_KEYS = ("remain_acc", "forget_acc", "test_acc", "test_remain_acc", "test_forget_acc", "mia",
               "unlearn_time_s")
HEADERS = {"remain_acc": "D_r", "forget_acc": "D_f", "test_acc": "D_t", "test_remain_acc": "D_t,r",
           "test_forget_acc": "D_t,f", "mia": "MIA", "unlearn_time_s": "time s", "avg_gap": "avg gap"}


def _clean(x: Any) -> Any:
    """NaN -> None (JSON has no NaN), recursively through dicts."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, float):
        return None if math.isnan(x) else x
    return x


def scalar_keys(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """RESULT_KEYS, then every other numeric per-seed key (avg_gap, attack scores), in row order."""
    extra = [k for k, v in rows[0].items() if k not in RESULT_KEYS and k != "seed"
             and isinstance(v, (int, float)) and not isinstance(v, bool)] if rows else []
    return RESULT_KEYS + tuple(extra)


def summarize(rows: list[dict[str, Any]], keys: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """Mean and population standard deviation (numpy's ``std``, ddof=0) of each key over seeds.

    A key that is NaN for every seed (an empty test class on a tiny slice) gives null.
    """
    keys = scalar_keys(rows) if keys is None else keys
    mean, std = {}, {}
    for key in keys:
        values = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
        finite = values[~np.isnan(values)]
        mean[key] = _clean(finite.mean()) if len(finite) else None
        std[key] = _clean(finite.std()) if len(finite) else None
    return mean, std


def git_commit() -> str | None:
    """The commit of the code that ran, with ``-dirty`` when the tree has changes."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def results_document(cfg: Config, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The results.json schema: config, per-seed rows, mean, std (and run metadata)."""
    mean, std = summarize(rows)
    seeds = [_clean(dict(r)) for r in rows]
    return {"config": cfg.to_dict(), "seeds": seeds, "mean": mean, "std": std, "meta": meta}


def _fmt(x: float | None, key: str) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if key == "mia" else f"{x:.2f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Per-seed rows, then mean +- std, as aligned text."""
    mean, std = summarize(rows)
    keys = RESULT_KEYS + (("avg_gap",) if rows and "avg_gap" in rows[0] else ())
    header = ["seed"] + [HEADERS[k] for k in keys]
    lines = [[str(r["seed"])] + [_fmt(_clean(r[k]), k) for k in keys] for r in rows]
    lines.append(["mean"] + [f"{_fmt(mean[k], k)} +- {_fmt(std[k], k)}" for k in keys])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    out = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [header] + lines]
    return "\n".join(out)
