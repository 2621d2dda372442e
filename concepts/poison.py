"""Poisoning the forget class's training rows: new labels, and optionally donor evidence in the pixels.

Only the forget rows change; the remaining rows are used as they are. Labels
(``labels``): ``targeted`` sends every forget row to the donor; ``random`` draws each
label uniformly over all classes, the true one included, as the release's
``random.randrange(num_classes)`` does; ``keep`` leaves them. Images (``mode``): ``none``
leaves them (the paper's reported protocol is a label flip only); ``localized`` pastes,
for each of the forget class's top-M concepts, a donor patch over the place where that
concept peaks in the forget image; the patch is cut from a random donor-class image where
the donor concept (the one the donor was chosen by) peaks (``revision/poison_gen.py`` and ``concept_tools.py``:
``crop_patch`` / ``paste_patch``); ``center`` and ``random`` paste the same patch at the
image centre or at a seeded random place; ``full`` replaces the image by the donor image.
That is the ``simple`` variant. The ``release`` variant (``release_poison_images``) follows the
release's geometry instead: ``revision/poison_gen.py`` ``make_variant`` for ``center`` /
``random`` / ``full`` (a crop of the donor's centre, a centre kept a half patch inside the
image, the donor resized and pasted over the centre, at the release's ``POISON_SIZES`` of
``revision/config.py`` scaled to the stored side) and ``revision/poison_gen_multi.py`` for
top-M ``localized`` (each concept with its own donor class, a fresh donor image per concept,
and each concept's peak found again on the image as patched so far). With one concept and the
default patch side the two variants poison alike. Every draw comes from a named seeded stream,
so a seed poisons the same way every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data.rng import generator

LABEL_RULES = ("targeted", "random", "keep")
IMAGE_MODES = ("none", "localized", "center", "random", "full")
VARIANTS = ("simple", "release")
# The release's patch sides on its 224 px images (revision/config.py POISON_SIZES).
RELEASE_SIZES = {"localized": 64, "center": 96, "random": 96, "full": 160}


def poison_labels(labels: torch.Tensor, rule: str, donor: int, num_classes: int, seed: int) -> torch.Tensor:
    """New labels of the forget rows (a new tensor on the CPU)."""
    if rule == "targeted":
        return torch.full_like(labels.cpu(), donor)
    if rule == "random":
        return torch.randint(num_classes, labels.shape, generator=generator(seed, "concept_poison/labels"))
    if rule == "keep":
        return labels.cpu().clone()
    raise ValueError(f"label rule {rule!r} is not one of {', '.join(LABEL_RULES)}")


def default_patch(side: int) -> int:
    """The release's 64 px patch on 224 px images, scaled to the stored side (8 px on 28 x 28)."""
    return release_size(side, "localized")


def release_size(side: int, mode: str) -> int:
    """The release's patch side of ``mode`` scaled to the stored side: on 28 x 28, 8 (localized),
    12 (center, random) and 20 (full)."""
    return max(1, round(side * RELEASE_SIZES[mode] / 224))


def _window(centre: torch.Tensor, patch: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of ``patch`` windows centred at ``centre`` (N x 2), clamped inside the image."""
    top = (centre[:, 0] - patch // 2).clamp(0, h - patch)
    left = (centre[:, 1] - patch // 2).clamp(0, w - patch)
    return top, left


def _window_index(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, patch: int) -> tuple:
    """Advanced index of each image's ``patch`` x ``patch`` window at (top, left), every channel."""
    rows = (top[:, None] + torch.arange(patch))[:, None, :, None]
    cols = (left[:, None] + torch.arange(patch))[:, None, None, :]
    n = torch.arange(len(images))[:, None, None, None]
    chans = torch.arange(images.shape[1])[None, :, None, None]
    return n, chans, rows, cols


def _cut(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, patch: int) -> torch.Tensor:
    return images[_window_index(images, top, left, patch)]


def _paste(images: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    out = images.clone()
    out[_window_index(images, top, left, patches.shape[-1])] = patches
    return out


def _leave_as_is(mode: str) -> bool:
    """True for ``none`` (the images stay as they are); a mode that is not one of ``IMAGE_MODES`` raises."""
    if mode not in IMAGE_MODES:
        raise ValueError(f"image mode {mode!r} is not one of {', '.join(IMAGE_MODES)}")
    return mode == "none"


def _draw_donors(pool: torch.Tensor, n: int, seed: int, k: int = 0) -> torch.Tensor:
    """One image of ``pool`` per forget row, from a seeded stream: concept ``k`` of the release's
    top-M draws from its own, and ``k = 0`` is the simple variant's draw (so one concept poisons alike)."""
    stream = "concept_poison/donor_images" + (f"/{k}" if k else "")
    return pool.cpu()[torch.randint(len(pool), (n,), generator=generator(seed, stream))]


def poison_images(forget: torch.Tensor, donors: torch.Tensor, mode: str, patch: int, seed: int,
                  forget_peaks: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
                  donor_peak: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The forget images after poisoning (CPU tensors in the stored dtype).

    ``donors``: the donor-class training images to take evidence from (one is drawn per
    forget row). ``forget_peaks(images)`` gives, per top concept, the N x 2 centre where it
    peaks in each forget image; ``donor_peak(images)`` the centre of the donor concept.
    """
    forget = forget.cpu()
    if _leave_as_is(mode):
        return forget.clone()
    n, (h, w) = len(forget), forget.shape[-2:]
    chosen = _draw_donors(donors, n, seed)
    if mode == "full":
        return chosen.clone()
    if donor_peak is None:
        raise ValueError(f"mode {mode} needs the donor concept's location")
    top, left = _window(donor_peak(chosen).cpu(), patch, h, w)
    patches = _cut(chosen, top, left, patch)
    if mode == "center":
        centres = [torch.tensor([[h // 2, w // 2]]).expand(n, 2)]
    elif mode == "random":
        g = generator(seed, "concept_poison/patch_place")
        centres = [torch.stack([torch.randint(h, (n,), generator=g), torch.randint(w, (n,), generator=g)], 1)]
    else:  # localized: one patch per top concept, where that concept peaks in the forget image
        if forget_peaks is None:
            raise ValueError("mode localized needs the forget concepts' locations")
        centres = [c.cpu() for c in forget_peaks(forget)]
    out = forget
    for centre in centres:
        out = _paste(out, patches, *_window(centre, patch, h, w))
    return out.clone() if out is forget else out


def _resize(images: torch.Tensor, side: int) -> torch.Tensor:
    """``images`` resized to ``side`` x ``side`` as the release does (bilinear, ``align_corners=False``)."""
    if images.shape[-1] == side and images.shape[-2] == side:
        return images.clone()
    out = F.interpolate(images.float(), size=(side, side), mode="bilinear", align_corners=False)
    if not images.dtype.is_floating_point:
        out = out.round().clamp(0, torch.iinfo(images.dtype).max)
    return out.to(images.dtype)


@dataclass(frozen=True)
class ConceptPaste:
    """One of the top-M concepts under the release's recipe: the donor class's images to cut from,
    where the donor concept peaks in them, and where the forget concept peaks in a forget image."""

    donors: torch.Tensor
    donor_peak: Callable[[torch.Tensor], torch.Tensor]
    forget_peak: Callable[[torch.Tensor], torch.Tensor]


def release_poison_images(forget: torch.Tensor, donors: torch.Tensor, mode: str, seed: int,
                          pastes: list[ConceptPaste] | None = None, patch: int = 0) -> torch.Tensor:
    """The forget images poisoned with the release's geometry (CPU tensors in the stored dtype).

    ``center`` / ``random``: a crop of the donor image's centre (96/224 of the side) pasted at
    the image centre, or at a centre drawn a half patch inside each edge (the release's
    ``random_center``); ``full``: the donor image resized to 160/224 of the side, pasted over the
    centre (the forget image's border stays). ``localized``: for each entry of ``pastes`` in
    order (the top-M concepts), a fresh donor image of that entry's class, its patch cut where
    the donor concept peaks, pasted where the forget concept peaks in the image as patched so far
    (the release locates and cuts with its 64/224 window, then resizes to ``patch``; 0 keeps that
    side). ``patch`` > 0 also sets the side of ``center`` / ``random`` / ``full``, as the
    release's ``--patch`` does.
    """
    forget = forget.cpu()
    if _leave_as_is(mode):
        return forget.clone()
    n, (h, w) = len(forget), forget.shape[-2:]
    side = min(h, w)
    if mode == "localized":
        if not pastes:
            raise ValueError("mode localized needs the top concepts' donors and locations")
        window = default_patch(side)
        size = patch or window
        out = forget
        for k, step in enumerate(pastes):
            chosen = _draw_donors(step.donors, n, seed, k)
            patches = _resize(_cut(chosen, *_window(step.donor_peak(chosen).cpu(), window, h, w), window), size)
            out = _paste(out, patches, *_window(step.forget_peak(out).cpu(), size, h, w))
        return out
    size = min(patch or release_size(side, mode), side)
    chosen = _draw_donors(donors, n, seed)
    middle = torch.tensor([[h // 2, w // 2]]).expand(n, 2)
    if mode == "full":
        patches = _resize(chosen, size)
    else:
        patches = _cut(chosen, *_window(middle, size, h, w), size)
    if mode == "random":
        g, margin = generator(seed, "concept_poison/patch_place"), size // 2
        middle = torch.stack([torch.randint(margin, h - margin + 1, (n,), generator=g),
                              torch.randint(margin, w - margin + 1, (n,), generator=g)], 1)
    return _paste(forget, patches, *_window(middle, size, h, w))
