"""Models: every model returns ``(logits, embedding)``."""

from __future__ import annotations

from torch import nn

from models.cnn import CNN
from models.resnet import ResNet18

MODELS = {"cnn": CNN, "resnet18": ResNet18}


def build_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised model (draws from torch's global RNG)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes)


__all__ = ["CNN", "MODELS", "ResNet18", "build_model"]
