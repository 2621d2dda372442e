"""Accuracy from logits, in percent."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of rows whose arg-max equals the label; NaN for an empty set, and NaN when a logit
    is not finite (a diverged model: the arg-max of a NaN row is class 0, a score it did not earn)."""
    if labels.numel() == 0 or not bool(torch.isfinite(logits).all()):
        return float("nan")
    correct = int((logits.argmax(dim=1) == labels).sum().item())  # exact count, no float32 mean
    return 100.0 * correct / labels.numel()
