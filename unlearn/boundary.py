"""Pieces both Boundary Unlearning methods share (Chen et al., CVPR 2023).

- the FGSM step of Boundary Shrink, taken in pixel units of [0, 1] whatever
  normalisation the model input carries, as the release's attack does;
- the label each forget sample is trained on, from the attacked logits: the release's
  arg-max (the true label where the attack fails) or the runner-up variant;
- position batches over an index set (a method that precomputes one value per row
  needs the rows' positions, not only their images and labels);
- widening and narrowing the last Linear layer for Boundary Expanding.
"""

from __future__ import annotations

import math
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


FALLBACKS = ("true_label", "runner_up")


def attacked_label(adv_logits: torch.Tensor, y: torch.Tensor, fallback: str) -> torch.Tensor:
    """The class each forget sample is fine-tuned toward, from the original's logits on the attacked input.

    ``true_label`` (the release, ``boundary_unlearning.py`` ``boundary_shrink``: ``pred_label =
    argmax(adv_logits)``): the attacked input's arg-max, which is ``y`` itself wherever the
    FGSM step did not cross the boundary. ``runner_up``: the highest-scoring class other than
    ``y`` (:func:`nearest_wrong_label`), so every sample gets a wrong label.
    """
    if fallback == "true_label":
        return adv_logits.argmax(dim=1)
    if fallback == "runner_up":
        return nearest_wrong_label(adv_logits, y)
    raise ValueError(f"boundary_shrink_fallback: {fallback!r} is not one of {', '.join(FALLBACKS)}")


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


def widen(layer: nn.Linear, gen: torch.Generator) -> nn.Linear:
    """``layer`` with one extra output row (the shadow class): old rows copied, the new row Xavier-normal, bias 0.

    As the release (``boundary_unlearning.py`` ``boundary_expanding``): a new
    ``nn.Linear(in, out + 1)`` initialised by ``models.init_params`` (Linear: weight
    ``xavier_normal_``, i.e. N(0, 2 / (fan_in + fan_out)) with fan_out = out + 1; bias zero),
    then the trained rows copied over it, so only the shadow row keeps the initialisation.
    Built without a default initialisation, and the row drawn from ``gen`` on the CPU, so
    torch's global random stream is left alone and every device gets the same row.
    """
    out_features, in_features = layer.weight.shape
    wide = nn.utils.skip_init(nn.Linear, in_features, out_features + 1, bias=layer.bias is not None,
                              device=layer.weight.device, dtype=layer.weight.dtype)
    std = xavier_std(in_features, out_features + 1)
    with torch.no_grad():
        shadow = torch.randn(in_features, generator=gen) * std
        wide.weight[:out_features].copy_(layer.weight)
        wide.weight[out_features].copy_(shadow.to(wide.weight.device, wide.weight.dtype))
        if layer.bias is not None:
            wide.bias[:out_features].copy_(layer.bias)
            wide.bias[out_features] = 0.0
    return wide


def xavier_std(fan_in: int, fan_out: int) -> float:
    """The standard deviation of ``nn.init.xavier_normal_`` (gain 1) for a ``fan_out x fan_in`` weight."""
    return math.sqrt(2.0 / (fan_in + fan_out))


def narrow(layer: nn.Linear, out_features: int) -> nn.Linear:
    """The first ``out_features`` rows of ``layer`` as a new Linear (the shadow row pruned)."""
    small = nn.utils.skip_init(nn.Linear, layer.in_features, out_features, bias=layer.bias is not None,
                               device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        small.weight.copy_(layer.weight[:out_features])
        if layer.bias is not None:
            small.bias.copy_(layer.bias[:out_features])
    return small
