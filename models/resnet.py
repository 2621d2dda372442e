"""ResNets for CIFAR, built from torchvision as the releases do.

ResNet-18 (random init) is CaMU's CIFAR model; ResNet-50 at 224 px, started from
ImageNet weights, is the concept method's (``learn_resnet50_cifar100.py`` of
ChangWenhan/Concept_Inference_Unlearn_official).
"""

from __future__ import annotations

import torch
from torch import nn


class DownloadError(RuntimeError):
    """Pretrained weights are neither cached nor reachable; the message says which."""


class ResNet(nn.Module):
    """A torchvision ResNet minus its fc, then a new Linear(features -> classes).

    The embedding is the pooled feature vector (512-d for ResNet-18, 2048-d for ResNet-50).
    """

    def __init__(self, num_classes: int = 10, arch: str = "resnet18", pretrained: bool = False) -> None:
        super().__init__()
        from torchvision import models as tv_models  # here: a CIFAR-only dependency, slow to import

        weights = None
        if pretrained:
            weights = tv_models.get_model_weights(arch).DEFAULT
        try:
            backbone = tv_models.get_model(arch, weights=weights)
        except (OSError, RuntimeError) as err:  # urllib errors are OSErrors
            raise DownloadError(f"{arch}: torchvision's ImageNet weights {weights} are not in the torch hub cache "
                                f"and could not be downloaded ({type(err).__name__}); run once online or set "
                                f"pretrained=false") from None
        width = backbone.fc.in_features
        self.features = nn.Sequential(*list(backbone.children())[:-1])  # ends in AdaptiveAvgPool2d
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x 3 x 224 x 224 -> (logits N x classes, embedding N x width)."""
        emb = self.features(x).flatten(1)
        return self.fc(emb), emb

    @property
    def classifier(self) -> nn.Linear:
        """The last layer (logits), for methods that edit the output space."""
        return self.fc

    def set_classifier(self, layer: nn.Linear) -> None:
        """Swap the last layer (nn.Module's attribute assignment would bypass a property setter)."""
        self.fc = layer


class ResNet18(ResNet):
    """torchvision ``resnet18()`` with a new head: CaMU's CIFAR model (random init)."""

    def __init__(self, num_classes: int = 10, pretrained: bool = False) -> None:
        super().__init__(num_classes, "resnet18", pretrained)


class ResNet50(ResNet):
    """torchvision ``resnet50()`` with a new head: the concept method's model."""

    def __init__(self, num_classes: int = 10, pretrained: bool = False) -> None:
        super().__init__(num_classes, "resnet50", pretrained)
