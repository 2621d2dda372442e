"""The release's concept locator (concepts/clip_windows.py) on a stand-in CLIP whose embedding is known.

The stand-in embeds a window as (mean intensity, 0.1), so its cosine with the text vector
(1, 0) grows with the window's brightness: the brightest 64/224 window must win, and its
centre must come back in stored pixels.
"""

from __future__ import annotations

import torch

from concepts.clip_bank import CLIP_MEAN, CLIP_STD, ClipEmbedder
from concepts.clip_windows import GRID, to_stored, window_peaks, window_similarities

VECTOR = torch.tensor([1.0, 0.0])


class Brightness(torch.nn.Module):
    """``encode_image``: the window's mean intensity in [0, 1] (CLIP's normalisation undone), and 0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        unit = x * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        mean = unit.mean(dim=(1, 2, 3))
        return torch.stack([mean, torch.full_like(mean, 0.1)], dim=1)


def embedder(pixel_scale: float = 1.0) -> ClipEmbedder:
    return ClipEmbedder(Brightness(), (32, 32), pixel_scale, torch.device("cpu"))


def test_the_brightest_window_wins_at_the_release_geometry():
    """A 64 px block on a 224 px image at window (3, 6): the release's centre (3*16 + 32, 6*16 + 32)."""
    image = torch.zeros(1, 1, 224, 224)
    image[0, 0, 48:112, 96:160] = 1.0
    sims = window_similarities(embedder(), VECTOR, image)
    assert sims.shape == (1, GRID, GRID) == (1, 11, 11)
    assert sims[0].flatten().argmax() == 3 * GRID + 6 and torch.isclose(sims[0, 3, 6], torch.tensor(1 / 1.01 ** 0.5))
    assert window_peaks(embedder(), VECTOR, image).tolist() == [[80, 128]]


def test_the_release_order_reads_three_neighbouring_windows_as_one():
    """The release reshapes the channel-major windows without a permute: its cell k holds single-channel windows
    3k..3k+2. Cell 53 = channel-1 windows 38, 39, 40 (brightness 0.75, 1, 0.75) beats cell 13 (windows 39, 40, 41:
    1, 0.75, 0.5): the block at window (3, 6) is reported at cell (4, 9), centre (4*16 + 32, 9*16 + 32)."""
    image = torch.zeros(1, 1, 224, 224)
    image[0, 0, 48:112, 96:160] = 1.0
    sims = window_similarities(embedder(), VECTOR, image, as_released=True)
    mean = torch.tensor([(0.75 + 1 + 0.75) / 3, 0.1])
    assert sims[0].flatten().argmax() == 53 and torch.isclose(sims[0, 4, 9], mean[0] / mean.norm())
    assert window_peaks(embedder(), VECTOR, image, as_released=True).tolist() == [[96, 176]]


def test_the_centre_comes_back_in_stored_pixels():
    """On 28 px (x 8 to 224) an 8 px block at rows 16-23, cols 4-11 fills window (8, 2): centre (160, 64) on
    the 224 grid, the stored pixel (20, 8); 8-bit CIFAR-like images are divided by their pixel scale."""
    image = torch.zeros(2, 1, 28, 28)
    image[0, 0, 16:24, 4:12] = 1.0
    image[1, 0, 0:8, 20:28] = 1.0  # top-right corner: window (0, 10), centre (32, 192) -> (4, 24)
    assert window_peaks(embedder(), VECTOR, image).tolist() == [[20, 8], [4, 24]]
    rgb = (image.expand(-1, 3, -1, -1) * 255).to(torch.uint8)
    assert window_peaks(embedder(255.0), VECTOR, rgb).tolist() == [[20, 8], [4, 24]]


def test_ties_go_to_the_first_window_and_positions_map_onto_the_side():
    assert window_peaks(embedder(), VECTOR, torch.zeros(1, 1, 28, 28)).tolist() == [[4, 4]]  # (32.5 / 8) -> 4
    assert to_stored(torch.tensor([0, 7, 8, 223]), 28).tolist() == [0, 0, 1, 27]
    assert to_stored(torch.tensor([0, 111, 112, 223]), 32).tolist() == [0, 15, 16, 31]


def test_images_go_through_clip_a_few_at_a_time_with_the_same_answer():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 28, 28, generator=g)
    one_pass, batched = embedder(), embedder()
    whole = window_peaks(one_pass, VECTOR, images, windows_per_pass=10_000)
    parts = window_peaks(batched, VECTOR, images, windows_per_pass=2 * GRID * GRID)
    assert one_pass.model.batches == [5 * GRID * GRID]
    assert batched.model.batches == [2 * GRID * GRID, 2 * GRID * GRID, GRID * GRID]
    assert torch.equal(whole, parts) and whole.shape == (5, 2)
    released = window_peaks(embedder(), VECTOR, images, as_released=True, windows_per_pass=2 * GRID * GRID)
    one_by_one = torch.cat([window_peaks(embedder(), VECTOR, images[i:i + 1], as_released=True) for i in range(5)])
    assert torch.equal(released, one_by_one)  # the release's order is per image, whatever the batch
    assert window_peaks(embedder(), VECTOR, images[:0]).shape == (0, 2)


def test_the_pcbm_margin_map_weighs_every_concept_s_cosine():
    """The release's localized_margin locator: window cosines to all concepts times the forget class's PCBM
    weights. One-hot weights pick that concept's own peak; weights (1, -1) against a second concept that
    prefers dark windows move the peak to where the bright block's contrast is largest."""
    image = torch.zeros(1, 1, 224, 224)
    image[0, 0, 48:112, 96:160] = 1.0
    vectors = torch.stack([VECTOR, torch.tensor([0.0, 1.0])])  # bright, dark (the constant 0.1 part)
    sims = window_similarities(embedder(), vectors, image)
    assert sims.shape == (1, GRID, GRID, 2)
    assert torch.allclose(sims[..., 0], window_similarities(embedder(), VECTOR, image))
    one_hot = window_peaks(embedder(), vectors, image, weights=torch.tensor([1.0, 0.0]))
    assert one_hot.tolist() == window_peaks(embedder(), VECTOR, image).tolist() == [[80, 128]]
    dark = window_peaks(embedder(), vectors, image, weights=torch.tensor([0.0, 1.0]))
    assert dark.tolist() == [[32, 32]]  # an all-dark window, the first in row-major order
    assert window_peaks(embedder(), vectors, image, weights=torch.tensor([1.0, -1.0])).tolist() == [[80, 128]]
