"""Model outputs on a whole tensor set, in eval mode, at a large batch, without autograd."""

from __future__ import annotations

import torch
from torch import nn

from data.datasets import Dataset
from models.runtime import PLAIN, Runtime


def predict(model: nn.Module, data: Dataset, images: torch.Tensor, batch_size: int = 1024,
            train_transform: bool = False, gen: torch.Generator | None = None,
            runtime: Runtime = PLAIN) -> torch.Tensor:
    """Logits of ``model`` on ``images`` (stored form), float32 N x classes.

    ``train_transform`` applies the training augmentation first (the release evaluates
    D_r and D_f on CIFAR through its training loaders). The model's mode is restored.
    """
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode(), runtime.autocast(images.device):
        for start in range(0, images.shape[0], batch_size):
            x = data.inputs(images[start:start + batch_size], train=train_transform, gen=gen)
            out.append(model(x)[0].float())
    model.train(was_training)
    if not out:
        return torch.empty(0, data.num_classes, device=images.device)
    return torch.cat(out)
