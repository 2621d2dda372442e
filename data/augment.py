"""The release's CIFAR transforms, done on whole batches on the device.

Train: Resize(224, 224) -> RandomResizedCrop(224) -> RandomHorizontalFlip -> ToTensor ->
Normalize(ImageNet). Test: Resize(224, 224) -> CenterCrop(224) (a no-op after the
resize) -> ToTensor -> Normalize. Each image draws its own crop and flip, as with a
per-sample torchvision transform; the crop is resampled bilinearly with ``roi_align``
(tensor resampling, so pixels differ slightly from PIL's, the distribution does not).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from data.rng import draw_to

SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
ATTEMPTS = 10  # torchvision tries ten draws before falling back to a centre crop


def random_resized_crop_boxes(n: int, size: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) of RandomResizedCrop's parameter draw on a size x size image.

    Vectorised torchvision ``RandomResizedCrop.get_params``: up to ten draws of area and
    log-uniform aspect ratio; the first that fits is taken, else the whole (square) image.
    """
    area = float(size * size)
    u = torch.rand(n, ATTEMPTS, 4, generator=gen)  # on the CPU: the same boxes on every device
    target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[..., 0])
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    top = torch.floor(u[..., 2] * (size - h + 1)).clamp(min=0)
    left = torch.floor(u[..., 3] * (size - w + 1)).clamp(min=0)
    # index of the first attempt that fits; ATTEMPTS when none does
    first = torch.where(ok, torch.arange(ATTEMPTS), ATTEMPTS).amin(dim=1)
    found = first < ATTEMPTS
    pick = first.clamp(max=ATTEMPTS - 1)[:, None]
    w, h, top, left = (t.gather(1, pick)[:, 0] for t in (w, h, top, left))
    w, h = torch.where(found, w, float(size)), torch.where(found, h, float(size))
    top, left = torch.where(found, top, 0.0), torch.where(found, left, 0.0)
    return torch.stack([left, top, left + w, top + h], dim=1)


class CifarTransform:
    """uint8 N x 3 x 32 x 32 on the device -> normalised float N x 3 x 224 x 224."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        x = images.to(torch.float32) / 255.0
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        if train:
            from torchvision.ops import roi_align  # here: importing torchvision.ops costs seconds

            n = x.shape[0]
            boxes = draw_to(random_resized_crop_boxes(n, SIZE, gen), x.device)
            rois = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes], dim=1)
            x = roi_align(x, rois, output_size=(SIZE, SIZE), spatial_scale=1.0, sampling_ratio=1, aligned=True)
            flip = draw_to(torch.rand(n, generator=gen) < 0.5, x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return (x - self.mean) / self.std
