"""Measurements the baseline tests share."""

from __future__ import annotations

import torch
from torch import nn

from eval import accuracy, predict


def forget_class_accuracy(model: nn.Module, data, split) -> float:
    """Accuracy on D_f (all training samples of class 0) and on the test samples of class 0, pooled."""
    test_f = torch.nonzero(data.test.labels == 0).flatten()
    images = torch.cat([data.train.images[split.forget], data.test.images[test_f]])
    labels = torch.cat([data.train.labels[split.forget], data.test.labels[test_f]])
    return accuracy(predict(model, data, images), labels)


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]
