"""Pieces both Boundary Unlearning methods share (Chen et al., CVPR 2023).

- the FGSM step of Boundary Shrink, taken in pixel units of [0, 1] whatever
  normalisation the model input carries, as the release's attack does;
- the choice of the nearest wrong class from the attacked logits;
- position batches over an index set (a method that precomputes one value per row
  needs the rows' positions, not only their images and labels);
- widening and narrowing the last Linear layer for Boundary Expanding.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data.batches import batch_indices, num_batches
from data.datasets import Dataset
from data.rng import generator
from models.runtime import PLAIN, Runtime


def pixel_affine(data: Dataset, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` with model input = (pixel - mean) / std; (0, 1) for inputs that are pixels.

    A transform that normalises exposes ``mean`` and ``std`` (the CIFAR transform does);
    any other transform passes pixels in [0, 1] through.
    """
    mean = getattr(data.transform, "mean", None)
    std = getattr(data.transform, "std", None)
    if mean is None or std is None:
        return torch.zeros((), device=device), torch.ones((), device=device)
    return mean.to(device), std.to(device)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float, mean: torch.Tensor, std: torch.Tensor,
         runtime: Runtime = PLAIN) -> torch.Tensor:
    """One untargeted FGSM step of size ``bound`` in pixel units, clipped to [0, 1] and to the 8-bit grid.

    ``x`` is a model input (pixels normalised by ``mean``/``std``); the result is one too.
    ``model`` should be in eval mode; its parameters get no gradient.
    """
    x_adv = x.detach().clone().requires_grad_(True)
    with runtime.autocast(x.device):
        logits, _ = model(x_adv)
    # sum, not mean: the sign is the same and no gradient underflows to an exact zero
    (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), x_adv)
    pixels = x.detach() * std + mean + bound * grad.sign()
    pixels = torch.round(pixels.clamp(0.0, 1.0) * 255) / 255
    return (pixels - mean) / std


def nearest_wrong_label(adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The highest-scoring class other than ``y`` on the attacked input.

    Where the attack crossed the boundary this is its arg-max; where it did not, the
    runner-up, so every forget sample gets a wrong label.
    """
    masked = adv_logits.float().scatter(1, y[:, None], float("-inf"))
    return masked.argmax(dim=1)


def position_batches(task_seed: int, n: int, batch_size: int, epochs: int, purpose: str, device: torch.device | str,
                     desc: str = "") -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(epoch, positions)`` over ``range(n)``, shuffled anew each epoch from the ``purpose`` stream."""
    order = generator(task_seed, f"{purpose}/order")
    steps = num_batches(n, batch_size)
    for epoch in range(epochs):
        bar = tqdm(batch_indices(n, batch_size, True, order, device), total=steps,
                   desc=f"{desc or purpose} epoch {epoch + 1}/{epochs}", leave=False)
        for pos in bar:
            yield epoch, pos


def widen(layer: nn.Linear, gen: torch.Generator, std: float = 1e-3) -> nn.Linear:
    """``layer`` with one extra output row (the shadow class): old rows copied, new weights N(0, std^2), bias 0.

    The release initialises its widened classifier with ``init_params`` (Linear weights
    N(0, 1e-3^2), biases 0) and then copies the trained rows over it. Built without a
    default initialisation, so torch's global random stream is left alone.
    """
    out_features, in_features = layer.weight.shape
    wide = nn.utils.skip_init(nn.Linear, in_features, out_features + 1, bias=layer.bias is not None,
                              device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        shadow = torch.randn(in_features, generator=gen) * std  # CPU draw: the same row on every device
        wide.weight[:out_features].copy_(layer.weight)
        wide.weight[out_features].copy_(shadow.to(wide.weight.device, wide.weight.dtype))
        if layer.bias is not None:
            wide.bias[:out_features].copy_(layer.bias)
            wide.bias[out_features] = 0.0
    return wide


def narrow(layer: nn.Linear, out_features: int) -> nn.Linear:
    """The first ``out_features`` rows of ``layer`` as a new Linear (the shadow row pruned)."""
    small = nn.utils.skip_init(nn.Linear, layer.in_features, out_features, bias=layer.bias is not None,
                               device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        small.weight.copy_(layer.weight[:out_features])
        if layer.bias is not None:
            small.bias.copy_(layer.bias[:out_features])
    return small
