"""What every unlearning method receives, and helpers that more than one method needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from data.datasets import Dataset
from data.splits import Split


@dataclass
class UnlearnTask:
    """The data side of an unlearning request: the dataset tensors, the split and the seed."""

    data: Dataset
    split: Split
    seed: int


def has_batch_statistics(model: nn.Module) -> bool:
    """True when a forward pass in train mode depends on the batch it sees (BatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def forward_pair(model: nn.Module, a: torch.Tensor, b: torch.Tensor
                 ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``(model(a), model(b))``, as one concatenated pass when that computes the same thing.

    A model with batch statistics in train mode (ResNet's BatchNorm) must see each batch
    on its own, as the release feeds them; for every other model one pass of both halves
    is the same computation at half the launches.
    """
    if has_batch_statistics(model):
        return model(a), model(b)
    logits, emb = model(torch.cat([a, b]))
    n = a.shape[0]
    return (logits[:n], emb[:n]), (logits[n:], emb[n:])
