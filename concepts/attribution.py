"""Integrated Gradients, twice: concepts -> class (which concepts define the forget class) and
pixels -> concept (where a concept sits in an image).

The paper attributes the PCBM head's class decision to concepts with Integrated Gradients
(Sundararajan et al., 2017) through captum's ``IntegratedGradients``. On a linear head IG
is exact: the attribution of concept j to class c is ``w[c, j] * (x_j - baseline_j)``, so
ranking by the mean IG over the forget class's rows differs from the release's ranking by
``w[c]`` (``rank_concepts`` in ``revision/concept_tools.py``) only by each concept's mean
margin. ``concept_poison_rank`` chooses between the two.

The release locates a concept in an image with CLIP similarities of sliding 64 px windows
(``patch_similarity`` / ``locate_peak``); that works only for the CLIP bank
(``concepts/clip_windows.py``, ``concept_poison_locate=clip_window``). The default location
is where the pixel IG of the concept's margin, summed over a patch-sized window, peaks: the
same question ("where is the concept?") for every bank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from captum.attr import IntegratedGradients


def _integrated_gradients(forward: Callable) -> IntegratedGradients:
    """captum's IG over ``forward``; captum is imported here, on first use, as it is slow to import."""
    from captum.attr import IntegratedGradients

    return IntegratedGradients(forward)


def concept_attributions(head: torch.nn.Linear, margins: torch.Tensor, target: int, steps: int = 16
                         ) -> torch.Tensor:
    """IG of ``head``'s logit ``target`` w.r.t. each concept margin (N x K), zero baseline."""
    ig = _integrated_gradients(head)
    return ig.attribute(margins.float(), baselines=torch.zeros_like(margins.float()), target=target, n_steps=steps)


def rank_concepts(head: torch.nn.Linear, target: int, rule: str, margins: torch.Tensor | None = None,
                  steps: int = 16) -> list[int]:
    """Concept indices of class ``target``, most defining first: by PCBM ``weight`` or by mean ``ig``."""
    if rule == "weight":
        score = head.weight.detach()[target]
    elif rule == "ig":
        if margins is None:
            raise ValueError("rank by ig needs the forget class's margins")
        score = concept_attributions(head, margins, target, steps).mean(0)
    else:
        raise ValueError(f"concept ranking {rule!r} is not one of weight, ig")
    return torch.argsort(score.cpu(), descending=True, stable=True).tolist()


@contextmanager
def bilinear_backward_allowed(device: torch.device | str) -> Iterator[None]:
    """Deterministic mode on CUDA, with the bilinear resize's backward allowed (with torch's warning).

    Pixel IG differentiates through the bilinear resize to the bank's input size (CLIP's 224 px,
    the CIFAR transform), and torch has no deterministic CUDA kernel for that backward: under
    ``deterministic: true`` it raises. Its atomic adds reorder rounding only, which a patch
    position (the argmax of a windowed sum) survives; elsewhere nothing changes.
    """
    strict = torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    if not (strict and torch.device(device).type == "cuda"):
        yield
        return
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True)


def pixel_attributions(score: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, steps: int = 16,
                       batch_size: int = 64) -> torch.Tensor:
    """IG of a per-image scalar ``score(images) -> N`` w.r.t. the pixels, black baseline; N x C x H x W.

    Each chunk of ``batch_size`` images runs its ``steps`` interpolations as one batch. A chunk
    that runs out of GPU memory (a bank that resizes to CLIP's 224 px: the batch holds
    ``batch_size * steps`` such images) is tried again with half as many images, down to one;
    an image's attribution does not depend on its chunk, apart from the kernels' rounding.
    """
    ig = _integrated_gradients(score)
    parts = []
    start = 0
    with bilinear_backward_allowed(images.device):
        while start < len(images):
            x = images[start:start + batch_size].float()
            try:
                parts.append(ig.attribute(x, baselines=torch.zeros_like(x), n_steps=steps,
                                          internal_batch_size=len(x) * steps).detach())
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                batch_size //= 2
                if images.is_cuda:
                    torch.cuda.empty_cache()
                continue
            start += len(x)
    return torch.cat(parts)


def peak_centres(attributions: torch.Tensor, patch: int) -> torch.Tensor:
    """Per image, the (row, col) centre of the ``patch`` x ``patch`` window with the largest summed attribution."""
    heat = attributions.sum(1, keepdim=True)  # N x 1 x H x W
    window = F.avg_pool2d(heat, patch, stride=1)  # N x 1 x (H - p + 1) x (W - p + 1)
    n, _, h, w = window.shape
    top = window.reshape(n, -1).argmax(1)
    return torch.stack([top // w + patch // 2, top % w + patch // 2], dim=1)
