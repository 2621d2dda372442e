"""Where the forget class's evidence sits in an image, by Grad-CAM of the original model.

One of the release's alternatives to its CLIP-window locator (its locator ablation, ``revision/
run_locator_ablation.sh``: ``localized_gradcam`` in ``revision/poison_gen.py``, ``gradcam`` in
``revision/concept_tools.py``): the donor's patch goes where Grad-CAM of the original classifier
for the forget class peaks, on the output of its last residual block (``layer4[-1]``), instead
of where a named concept peaks. Grad-CAM weighs each channel of that map by the mean gradient of
the class logit over the map, sums, and keeps the positive part; the peak is the map's largest
cell (first in row-major order on ties, as ``argmax``). Here the map is captum's
``LayerGradCam``, on the last spatial map of either model (ResNet: the last residual stage; the
CNN: its conv stack), in eval mode and float32, so an image's map does not depend on its batch.

The cell is carried back to the stored pixel at its centre. The release takes the peak with its
window helper at stride 32 and window 64 on a 7 x 7 map of a 224 px image, which puts the
patch's centre at a cell's far corner (``col * 32 + 32``), half a cell (16 px) right of and
below the cell's centre; the centre is what the map says.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def cam_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the model's last spatial feature map (Grad-CAM's layer)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise TypeError(f"{type(model).__name__} has no 'features' stack for Grad-CAM")
    if isinstance(features[-1], nn.AdaptiveAvgPool2d):  # ResNet: ..., layer4, avgpool
        return features[-2]
    return features  # the CNN: conv blocks, flattened next


def class_cams(model: nn.Module, inputs: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               target: int, batch_size: int = 32) -> torch.Tensor:
    """N x h x w Grad-CAM maps of class ``target`` (ReLU applied); ``inputs`` turns stored images into the
    model's inputs (normalisation, resizing). ``batch_size`` images at a time: each keeps its backward graph,
    which for a ResNet-50 at 224 px is about 100 MB an image."""
    from captum.attr import LayerGradCam

    from models.runtime import eager

    def logits(x: torch.Tensor) -> torch.Tensor:
        return model(x)[0].float()

    cam = LayerGradCam(logits, cam_layer(model))
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:  # float32 and eager (the layer's hook) whatever the run's autocast and compile
        with eager(model), torch.autocast(device.type, enabled=False):
            maps = [cam.attribute(inputs(images[s:s + batch_size]).float(), target=target, relu_attributions=True)
                    .detach()[:, 0] for s in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(maps) if maps else torch.zeros(0, 1, 1)


def cam_peaks(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per map (N x h x w), the (row, col) stored pixel at the centre of its largest cell; N x 2."""
    n, h, w = maps.shape
    top = maps.reshape(n, -1).argmax(1)
    rows = ((top // w).double() + 0.5) * height / h
    cols = ((top % w).double() + 0.5) * width / w
    return torch.stack([rows.floor().long().clamp(0, height - 1), cols.floor().long().clamp(0, width - 1)], dim=1)


def gradcam_peaks(model: nn.Module, inputs: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                  target: int) -> torch.Tensor:
    """Per image, the stored pixel (row, col) where Grad-CAM of class ``target`` peaks; N x 2, on the CPU."""
    maps = class_cams(model, inputs, images, target)
    return cam_peaks(maps.cpu(), images.shape[-2], images.shape[-1])
