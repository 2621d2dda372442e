"""Mini-batches as index tensors drawn from a permutation, instead of DataLoader workers.

The data already sits in memory (on the GPU when there is one), so a batch is a gather.
The last batch may be short, as with ``DataLoader(drop_last=False)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def batch_indices(n: int, batch_size: int, shuffle: bool, gen: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Yield index tensors covering ``range(n)`` once, in shuffled order when asked."""
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    order = order.to(device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
