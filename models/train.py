"""Supervised training with the release's recipe: Adam, cross-entropy, shuffled batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data.batches import batch_indices, num_batches
from data.datasets import Dataset
from data.rng import generator
from models.runtime import PLAIN, Runtime


def train_classifier(model: nn.Module, data: Dataset, indices: torch.Tensor, epochs: int, lr: float,
                     weight_decay: float, batch_size: int, seed: int, desc: str = "train",
                     runtime: Runtime = PLAIN) -> list[float]:
    """Train ``model`` in place on ``data.train[indices]``; returns the mean loss of each epoch.

    Batches get the training transform (augmentation on CIFAR), each batch its own draw.
    """
    device = data.train.labels.device
    indices = indices.to(device)
    order = generator(seed, "train/order")
    augment = generator(seed, "train/augment")
    opt = runtime.adam(model.parameters(), lr, weight_decay)
    model.train()
    losses = []
    steps = num_batches(len(indices), batch_size)
    for epoch in range(epochs):
        total = torch.zeros((), device=device)
        bar = tqdm(batch_indices(len(indices), batch_size, True, order, device), total=steps,
                   desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False)
        for pos in bar:
            idx = indices[pos]
            x = data.inputs(data.train.images[idx], train=True, gen=augment)
            with runtime.autocast(device):
                logits, _ = model(x)
            loss = F.cross_entropy(logits.float(), data.train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach()
        losses.append(total.item() / steps)  # one device sync per epoch
    return losses
