"""Models: every model returns ``(logits, embedding)``."""

from __future__ import annotations

from torch import nn

from models.cnn import CNN
from models.resnet import DownloadError, ResNet18, ResNet50

MODELS = {"cnn": CNN, "resnet18": ResNet18, "resnet50": ResNet50}


def build_model(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """A freshly initialised model (draws from torch's global RNG); ``pretrained``: ImageNet weights."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if pretrained:
        return MODELS[name](num_classes=num_classes, pretrained=True)
    return MODELS[name](num_classes=num_classes)


__all__ = ["CNN", "MODELS", "DownloadError", "ResNet18", "ResNet50", "build_model"]
