"""Counterfactual partners for the forget set (CaMU's data-level intervention).

Each forget sample (x_f, y_f) is paired, by position after shuffling both sets, with a
sample-set element (x_s, y_s). The counterfactual input is the *transformed* x_s plus
uniform noise in [0, 1); its label is y_s, re-drawn uniformly among the other classes
only where it equals y_f. The inputs are materialised once, as the release does, so a
CIFAR forget image keeps the one augmentation it was drawn with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.datasets import Dataset
from data.rng import draw_to, generator
from data.splits import Split

CHUNK = 512  # transform this many images at a time (bounds memory at 224 x 224)


@dataclass
class Counterfactuals:
    x_f: torch.Tensor  # forget inputs, transformed
    y_f: torch.Tensor
    x_cf: torch.Tensor  # noised sample-set inputs
    y_cf: torch.Tensor
    forget_index: torch.Tensor  # training index behind each row of x_f
    sample_index: torch.Tensor  # training index behind each row of x_cf

    def __len__(self) -> int:
        return int(self.y_f.shape[0])


def redraw_labels(y_s: torch.Tensor, y_f: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """y_s, except where it equals y_f: there a label drawn uniformly from the others (drawn on the CPU)."""
    r = draw_to(torch.randint(0, num_classes - 1, y_f.shape, generator=gen), y_f.device)
    other = r + (r >= y_f).to(r.dtype)  # skips y_f: uniform over the num_classes - 1 others
    return torch.where(y_s == y_f, other, y_s)


def _transformed(data: Dataset, idx: torch.Tensor, augment: torch.Generator,
                 noise: torch.Generator | None = None) -> torch.Tensor:
    """The training transform of ``idx``'s images (plus U[0, 1) noise), written chunk by chunk
    into one preallocated tensor: the peak stays near the result's own size (3 GB per 5,000
    CIFAR rows at 224 px) instead of chunks + their concatenation + a full-size noise tensor.
    Noise is drawn on the CPU per chunk; the CPU stream is sequential, so the values equal
    one draw of the whole shape.
    """
    images, out, pos = data.train.images, None, 0
    for chunk in idx.split(CHUNK):
        x = data.inputs(images[chunk], train=True, gen=augment)
        if noise is not None:
            x = x.add_(draw_to(torch.rand(x.shape, generator=noise, dtype=x.dtype), x.device))
        if out is None:
            out = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype, device=x.device)
        out[pos:pos + len(x)] = x
        pos += len(x)
        del x
    if out is None:  # an empty set
        out = data.inputs(images[idx], train=True, gen=augment)
    return out


def build_counterfactuals(data: Dataset, split: Split, seed: int) -> Counterfactuals:
    """One counterfactual quadruple (x_f, y_f, x_cf, y_cf) per row of D_f."""
    device = data.train.labels.device
    pairing = generator(seed, "counterfactual/pairing")
    forget = split.forget.cpu()[torch.randperm(len(split.forget), generator=pairing)]
    sample = split.sample.cpu()[torch.randperm(len(split.sample), generator=pairing)]
    forget, sample = forget.to(device), sample.to(device)
    labels = data.train.labels
    y_f, y_s = labels[forget], labels[sample]
    augment = generator(seed, "counterfactual/augment")
    x_f = _transformed(data, forget, augment)
    x_cf = _transformed(data, sample, augment, noise=generator(seed, "counterfactual/noise"))
    y_cf = redraw_labels(y_s, y_f, data.num_classes, generator(seed, "counterfactual/labels"))
    return Counterfactuals(x_f=x_f, y_f=y_f, x_cf=x_cf, y_cf=y_cf, forget_index=forget, sample_index=sample)
