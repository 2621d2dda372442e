"""Where a concept sits in an image, found with CLIP similarity of sliding windows, as the release does.

The release (``patch_similarity`` and ``locate_peak`` in ``revision/concept_tools.py``, called
by ``make_localized`` in ``revision/poison_gen.py``) works on images resized to 224 x 224 (its
``transform_224``: ``Resize((224, 224))``, ``ToTensor``). It cuts 64 px windows every 16 px
(11 x 11 of them), resizes each to CLIP's input side (bilinear), normalises it as CLIP does,
encodes it with CLIP's image encoder, and takes the window whose unit embedding has the largest
cosine with the concept's unit text vector; the concept sits at that window's centre,
``(index * 16 + 32)`` on each axis. Here the stored image is resized to 224 the same way
(bilinear on floats, where the release resizes 8-bit PIL images), the windows are scored, and
the centre is carried back to the stored pixel under it, where ``concepts/poison.py`` pastes.

The release's code does not score the windows it means to. ``unfold`` twice leaves
``1 x 3 x 11 x 11 x 64 x 64`` (channel first) and a plain ``reshape(-1, 3, 64, 64)`` follows,
so its k-th "window" is single-channel windows 3k, 3k + 1 and 3k + 2 of that channel-major
order read as R, G and B (windows of neighbouring places, and past k = 40 of the green and blue
planes), and its score is reported at grid cell k. A bright block that fills window (3, 6)
comes out at cell (4, 9) there (tested). ``as_released=False`` (``concept_poison_locate=
clip_window``) scores the windows as the paper describes them; ``as_released=True``
(``clip_window_release``) keeps the release's order, to reproduce its poisoned images.

Only the ``clip`` bank can do this (a concept is a word, a window an image CLIP embeds);
``concepts/attribution.py`` answers the same question for every bank with pixel Integrated
Gradients, the default (``concept_poison_locate=ig``). It costs 121 CLIP passes per located
image; a run locates each forget row once per replaced concept and one donor image per row
(per concept in the release variant's top-M; CIFAR-10's deer, one concept: about 1.2 million
RN50 passes): work for a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from concepts.clip_bank import ClipEmbedder, clip_normalize, to_unit_rgb

SIDE, WINDOW, STRIDE = 224, 64, 16  # the release's image side, window side and step
GRID = (SIDE - WINDOW) // STRIDE + 1  # windows per axis: 11


def window_similarities(embed: ClipEmbedder, vector: torch.Tensor, images: torch.Tensor, as_released: bool = False
                        ) -> torch.Tensor:
    """N x GRID x GRID cosines between each window's CLIP embedding and ``vector`` (the concept's text vector);
    with a C x D ``vector`` (several concepts), N x GRID x GRID x C. ``as_released``: the release's window
    order (module docstring)."""
    x = to_unit_rgb(images.to(embed.device), (SIDE, SIDE), embed.pixel_scale)
    windows = x.unfold(2, WINDOW, STRIDE).unfold(3, WINDOW, STRIDE)  # N x 3 x GRID x GRID x WINDOW x WINDOW
    if not as_released:  # each window's three channels together
        windows = windows.permute(0, 2, 3, 1, 4, 5)
    windows = windows.reshape(-1, 3, WINDOW, WINDOW)
    windows = F.interpolate(windows, size=embed.image_size, mode="bilinear", align_corners=False)
    features = embed.model.encode_image(clip_normalize(windows)).float()
    features = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    v = vector.to(features.device, torch.float32)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (features @ (v.T if v.dim() == 2 else v)).view(len(x), GRID, GRID, *v.shape[:-1])


def to_stored(centre: torch.Tensor, side: int) -> torch.Tensor:
    """A position on the 224 px grid -> the index of the stored pixel (of ``side``) that covers it."""
    return ((centre.double() + 0.5) * side / SIDE).floor().long().clamp(0, side - 1)


@torch.no_grad()
def window_peaks(embed: ClipEmbedder, vector: torch.Tensor, images: torch.Tensor, as_released: bool = False,
                 windows_per_pass: int = 256, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, the (row, col) in stored pixels of the centre of the window most like ``vector``; N x 2.

    With ``weights`` (C) and a C x D ``vector``, the window whose cosines to the C concepts weigh most:
    the release's ``localized_margin`` locator (``make_localized_margin`` in ``revision/poison_gen.py``),
    which scores each window by its cosines times the PCBM head's weights of the forget class.
    Images go through CLIP a few at a time (``windows_per_pass`` windows per pass, at least one
    image's 121); ties go to the first window in row-major order, as the release's ``argmax``.
    """
    def scores(x: torch.Tensor) -> torch.Tensor:
        sims = window_similarities(embed, vector, x, as_released)
        return sims if weights is None else sims @ weights.to(sims.device, torch.float32)

    h, w = images.shape[-2:]
    per_pass = max(1, windows_per_pass // (GRID * GRID))
    starts = range(0, len(images), per_pass)
    best = [scores(images[s:s + per_pass]).flatten(1).argmax(1).cpu()
            for s in tqdm(starts, desc="locating concepts (CLIP windows)", leave=False, disable=len(starts) < 8)]
    index = torch.cat(best) if best else torch.zeros(0, dtype=torch.long)
    rows = (index // GRID) * STRIDE + WINDOW // 2
    cols = (index % GRID) * STRIDE + WINDOW // 2
    return torch.stack([to_stored(rows, h), to_stored(cols, w)], dim=1)
