"""Poisoning the forget class's training rows: new labels, and optionally donor evidence in the pixels.

Only the forget rows change; the remaining rows are used as they are. Labels
(``labels``): ``targeted`` sends every forget row to the donor; ``random`` draws each
label uniformly over all classes, the true one included, as the release's
``random.randrange(num_classes)`` does; ``keep`` leaves them. Images (``mode``): ``none``
leaves them (the paper's reported protocol is a label flip only); ``localized`` pastes,
for each of the forget class's top-M concepts, a donor patch over the place where that
concept peaks in the forget image; the patch is cut from a random donor-class image where
the donor's own top concept peaks (``revision/poison_gen.py`` and ``concept_tools.py``:
``crop_patch`` / ``paste_patch``); ``center`` and ``random`` paste the same patch at the
image centre or at a seeded random place; ``full`` replaces the image by the donor image.
Every draw comes from a named seeded stream, so a seed poisons the same way every time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from data.rng import generator

LABEL_RULES = ("targeted", "random", "keep")
IMAGE_MODES = ("none", "localized", "center", "random", "full")


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
    return max(1, round(side * 64 / 224))


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


def poison_images(forget: torch.Tensor, donors: torch.Tensor, mode: str, patch: int, seed: int,
                  forget_peaks: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
                  donor_peak: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The forget images after poisoning (CPU tensors in the stored dtype).

    ``donors``: the donor-class training images to take evidence from (one is drawn per
    forget row). ``forget_peaks(images)`` gives, per top concept, the N x 2 centre where it
    peaks in each forget image; ``donor_peak(images)`` the centre of the donor's top concept.
    """
    forget = forget.cpu()
    if mode == "none":
        return forget.clone()
    if mode not in IMAGE_MODES:
        raise ValueError(f"image mode {mode!r} is not one of {', '.join(IMAGE_MODES)}")
    n, (h, w) = len(forget), forget.shape[-2:]
    pick = torch.randint(len(donors), (n,), generator=generator(seed, "concept_poison/donor_images"))
    chosen = donors.cpu()[pick]
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
