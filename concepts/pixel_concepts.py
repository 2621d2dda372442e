"""Concepts of handwritten digits and clothing that can be scored from the pixels alone.

The ``cav`` bank needs positive and negative examples of each concept. PCBM takes them
from annotated datasets (BRODEN, CUB); none exists offline for MNIST / Fashion-MNIST, so
each concept here is a measurable property of a 28 x 28 image, and its examples are the
images where it is strongest (positives) and weakest (negatives). Every concept is named
in ``CONCEPTS`` with what it measures; docs/concepts.md lists them too.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

# name -> what the score measures (higher = more of the concept)
CONCEPTS: dict[str, str] = {
    "loops": "number of enclosed background regions (holes) inside the ink",
    "loop_upper": "hole area in the upper half of the image",
    "loop_lower": "hole area in the lower half of the image",
    "stroke_horizontal": "energy of vertical intensity gradients (horizontal strokes and edges)",
    "stroke_vertical": "energy of horizontal intensity gradients (vertical strokes and edges)",
    "stroke_diagonal_up": "gradient energy across '/' strokes",
    "stroke_diagonal_down": "gradient energy across '\\\\' strokes",
    "ink_mass": "share of the image covered by ink",
    "ink_top": "share of the ink in the top third",
    "ink_bottom": "share of the ink in the bottom third",
    "ink_left": "share of the ink in the left third",
    "ink_right": "share of the ink in the right third",
    "ink_center": "share of the ink in the central third (both axes)",
    "tall": "bounding-box height over width of the ink",
    "symmetry_left_right": "similarity of the image to its mirror image (left-right)",
    "symmetry_top_bottom": "similarity of the image to its upside-down image",
    "texture": "high-frequency energy (squared Laplacian) inside the ink",
}

_INK = 0.5  # a pixel is ink above half of its image's intensity range
_HOLE = np.zeros((3, 3, 3), dtype=bool)
_HOLE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # 4-connected within an image, never across images


def _unit_range(images: torch.Tensor) -> np.ndarray:
    """N x 1 x H x W in any stored scale -> N x H x W in [0, 1] per image."""
    x = images.detach().to("cpu", torch.float64).reshape(images.shape[0], *images.shape[-2:]).numpy()
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    return (x - lo) / np.maximum(hi - lo, 1e-12)


def _holes(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: number of holes, and a mask of hole pixels (background not reachable from the border)."""
    labels, count = ndimage.label(~ink, structure=_HOLE)
    border = np.zeros_like(ink)
    border[:, 0, :] = border[:, -1, :] = border[:, :, 0] = border[:, :, -1] = True
    outside = np.unique(labels[border & (labels > 0)])
    is_hole = np.ones(count + 1, dtype=bool)
    is_hole[0] = False
    is_hole[outside] = False
    mask = is_hole[labels]
    image_of = np.zeros(count + 1, dtype=np.int64)
    idx = np.nonzero(labels)
    image_of[labels[idx]] = idx[0]
    hole_ids = np.nonzero(is_hole)[0]
    counts = np.bincount(image_of[hole_ids], minlength=ink.shape[0]).astype(np.float64)
    return counts, mask


def concept_scores(images: torch.Tensor) -> tuple[list[str], np.ndarray]:
    """Every concept of ``CONCEPTS`` scored on each image: (names, N x K float64)."""
    x = _unit_range(images)
    n, h, w = x.shape
    ink = x > _INK
    mass = ink.sum(axis=(1, 2)).astype(np.float64)
    safe_mass = np.maximum(mass, 1.0)
    loops, hole_mask = _holes(ink)
    gy = ndimage.sobel(x, axis=1)
    gx = ndimage.sobel(x, axis=2)
    lap = ndimage.laplace(x, mode="constant")
    thirds_h, thirds_w = h // 3, w // 3
    rows = ink.any(axis=2)
    cols = ink.any(axis=1)
    height = np.where(rows.any(axis=1), h - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1), 1)
    width = np.where(cols.any(axis=1), w - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1), 1)
    centre = ink[:, thirds_h:h - thirds_h, thirds_w:w - thirds_w].sum(axis=(1, 2))
    scores = {
        "loops": loops,
        "loop_upper": hole_mask[:, : h // 2].sum(axis=(1, 2)) / (h * w),
        "loop_lower": hole_mask[:, h // 2:].sum(axis=(1, 2)) / (h * w),
        "stroke_horizontal": (gy ** 2).mean(axis=(1, 2)),
        "stroke_vertical": (gx ** 2).mean(axis=(1, 2)),
        "stroke_diagonal_up": (((gx + gy) / np.sqrt(2)) ** 2).mean(axis=(1, 2)),
        "stroke_diagonal_down": (((gx - gy) / np.sqrt(2)) ** 2).mean(axis=(1, 2)),
        "ink_mass": mass / (h * w),
        "ink_top": ink[:, :thirds_h].sum(axis=(1, 2)) / safe_mass,
        "ink_bottom": ink[:, h - thirds_h:].sum(axis=(1, 2)) / safe_mass,
        "ink_left": ink[:, :, :thirds_w].sum(axis=(1, 2)) / safe_mass,
        "ink_right": ink[:, :, w - thirds_w:].sum(axis=(1, 2)) / safe_mass,
        "ink_center": centre / safe_mass,
        "tall": height / np.maximum(width, 1),
        "symmetry_left_right": -np.abs(x - x[:, :, ::-1]).mean(axis=(1, 2)),
        "symmetry_top_bottom": -np.abs(x - x[:, ::-1, :]).mean(axis=(1, 2)),
        "texture": (lap ** 2 * ink).sum(axis=(1, 2)) / safe_mass,
    }
    names = list(CONCEPTS)
    return names, np.stack([np.asarray(scores[k], dtype=np.float64) for k in names], axis=1)
