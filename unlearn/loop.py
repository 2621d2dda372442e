"""Pieces every gradient-based method shares: batches over an index set, optimisers.

A method writes only its step; these own shuffling, the training transform, devices and
progress bars, so no method repeats a batch loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from tqdm import tqdm

from data.batches import batch_indices, num_batches
from data.rng import generator
from unlearn.base import UnlearnTask


def batches(task: UnlearnTask, indices: torch.Tensor, batch_size: int, epochs: int, purpose: str,
            desc: str = "") -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(epoch, x, y)`` over ``data.train[indices]``, shuffled anew each epoch.

    ``x`` carries the training transform (augmentation on CIFAR), as every loader of the
    release does; ``purpose`` names the random stream, so each method draws its own order.
    """
    data = task.data
    device = data.train.labels.device
    indices = indices.to(device)
    order = generator(task.seed, f"{purpose}/order")
    augment = generator(task.seed, f"{purpose}/augment")
    steps = num_batches(len(indices), batch_size)
    for epoch in range(epochs):
        bar = tqdm(batch_indices(len(indices), batch_size, True, order, device), total=steps,
                   desc=f"{desc or purpose} epoch {epoch + 1}/{epochs}", leave=False)
        for pos in bar:
            idx = indices[pos]
            yield epoch, data.inputs(data.train.images[idx], train=True, gen=augment), data.train.labels[idx]


def make_optimizer(params: Iterable[torch.nn.Parameter], kind: str, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, fused: bool = False) -> torch.optim.Optimizer:
    """``adam`` or ``sgd`` (with momentum), as a method's paper uses."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer {kind!r} is not one of adam, sgd")
