"""ResNet-18 for CIFAR, as the release builds it from torchvision."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


class ResNet18(nn.Module):
    """torchvision ``resnet18()`` (random init) minus its fc, then a new Linear(512 -> classes).

    The embedding is the pooled 512-d feature vector.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        backbone = resnet18(weights=None)
        self.features = nn.Sequential(*list(backbone.children())[:-1])  # ends in AdaptiveAvgPool2d
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x 3 x 224 x 224 -> (logits N x classes, embedding N x 512)."""
        emb = self.features(x).flatten(1)
        return self.fc(emb), emb

    @property
    def classifier(self) -> nn.Linear:
        """The last layer (logits), for methods that edit the output space."""
        return self.fc

    def set_classifier(self, layer: nn.Linear) -> None:
        """Swap the last layer (nn.Module's attribute assignment would bypass a property setter)."""
        self.fc = layer
