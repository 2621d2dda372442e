"""Grad-CAM locator (concepts/gradcam.py) against a hand-computed Grad-CAM and hand-placed peaks."""

from __future__ import annotations

import torch

from concepts.gradcam import cam_layer, cam_peaks, class_cams, gradcam_peaks
from models.cnn import CNN
from models.resnet import ResNet18


def test_class_cams_are_grad_cam_of_the_last_spatial_map_by_hand():
    """ReLU(sum over channels of (mean gradient of the class logit over the map) x map), per image, in eval
    mode; the model's own mode is restored."""
    torch.manual_seed(0)
    model = CNN()
    for p in model.parameters():
        p.requires_grad_(False)  # the frozen original: the maps still need no parameter gradient
    x = torch.rand(4, 1, 28, 28)
    maps = class_cams(model, lambda t: t, x, 3)
    feats = model.features(x).detach().requires_grad_(True)
    grad, = torch.autograd.grad(model.head(model.embed(feats.flatten(1)))[:, 3].sum(), feats)
    by_hand = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * feats).sum(1))
    assert maps.shape == (4, 7, 7) and torch.allclose(maps, by_hand, atol=1e-6) and model.training
    alone = class_cams(model, lambda t: t, x[2:3], 3)  # an image's map does not depend on its batch
    assert torch.allclose(alone, maps[2:3], atol=1e-6)


def test_the_resnet_map_is_its_last_residual_stage():
    model = ResNet18(num_classes=10)
    assert cam_layer(model) is model.features[-2] is list(model.features.children())[-2]
    model.train()
    maps = class_cams(model, lambda t: t, torch.rand(2, 3, 64, 64), 1)
    assert maps.shape == (2, 2, 2) and model.training  # 64 px / 32; BatchNorm ran in eval mode and was restored


def test_the_peak_cell_comes_back_as_the_stored_pixel_at_its_centre():
    """A 7 x 7 map on 28 px: cell (2, 5) covers rows 8-11 and cols 20-23, centre (10, 22); ties go to the
    first cell in row-major order, as argmax."""
    maps = torch.zeros(3, 7, 7)
    maps[0, 2, 5] = 1.0
    maps[1, 6, 0] = maps[1, 6, 6] = 2.0
    assert cam_peaks(maps, 28, 28).tolist() == [[10, 22], [26, 2], [2, 2]]
    assert cam_peaks(maps[:1], 32, 32).tolist() == [[11, 25]]  # (2.5 * 32/7, 5.5 * 32/7), floored
    model = CNN()
    x = torch.rand(2, 1, 28, 28)
    assert gradcam_peaks(model, lambda t: t, x, 0).tolist() == cam_peaks(class_cams(model, lambda t: t, x, 0),
                                                                          28, 28).tolist()


def test_a_compiled_model_gives_the_eager_maps():
    """Under compile (nn.Module.compile) the layer's forward hook never fired and captum stopped; the maps and the
    classifier's inputs are taken in eager mode, and the model stays compiled."""
    from unlearn.concept_poison import classifier_inputs

    torch.manual_seed(1)
    model = CNN()
    x = torch.rand(3, 1, 28, 28)
    maps, inputs = class_cams(model, lambda t: t, x, 2), classifier_inputs(model, x)
    model.compile(backend="eager")
    model(x)
    assert torch.allclose(class_cams(model, lambda t: t, x, 2), maps)
    assert torch.allclose(classifier_inputs(model, x), inputs) and model._compiled_call_impl is not None
