"""Accuracy from logits, in percent."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of rows whose arg-max equals the label; NaN for an empty set."""
    if labels.numel() == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == labels).float().mean().item() * 100.0)
