"""The release's small CNN for MNIST and Fashion-MNIST."""

from __future__ import annotations

import torch
from torch import nn


class CNN(nn.Module):
    """Two conv blocks, a 256-d embedding layer and a two-layer head.

    The embedding is the output of Linear(1568 -> 256), taken before any activation, and
    the head has no activation between its two layers: both as in the release.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 7 x 7
        )
        self.embed = nn.Linear(32 * 7 * 7, 256)
        self.head = nn.Sequential(nn.Linear(256, 128), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N x 1 x 28 x 28 -> (logits N x classes, embedding N x 256)."""
        emb = self.embed(self.features(x).flatten(1))
        return self.head(emb), emb

    @property
    def classifier(self) -> nn.Linear:
        """The last layer (logits), for methods that edit the output space."""
        return self.head[1]

    def set_classifier(self, layer: nn.Linear) -> None:
        """Swap the last layer (nn.Module's attribute assignment would bypass a property setter)."""
        self.head[1] = layer
