"""RL (random labels): fine-tune on D_f relabelled at random together with D_r.

As in "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Image
Classification" (Fan et al., ICLR 2024), the RL baseline its saliency mask is built on
(also the RL of "Model Sparsity Can Simplify Machine Unlearning", Jia et al., NeurIPS
2023): minimise CE(f(x_f), y') on D_f with a random label y' != y_f plus CE on D_r.
Here the two sets are one shuffled pass per epoch over D_f (relabelled) and D_r
together, as the SalUn release does for CIFAR-100 (``unlearn/RL.py``; on CIFAR-10 it
runs a D_f pass then a D_r pass). The random labels follow the paper's y' != y: each
D_f row gets a label uniform over the other classes, drawn anew every epoch (the
release draws from all classes, the true one included). Optimiser of the release: SGD,
momentum 0.9; lr 0.01 (the SalUn appendix's RL range on CIFAR-10 starts there; the
README's SalUn command uses 0.013), 10 epochs, cut to ``random_label_epochs`` = 1 so
full MNIST stays within the CPU budget (one pass is 1,876 steps). No MNIST-size setting
is given; the CIFAR values are kept otherwise. Measured on MNIST class 0, seed 0, one
pass: D_f 0.0%, D_r 99.4%, D_t,r 98.8%, D_t,f 0.0% (two passes: D_r 99.7%, D_t,r 99.1%).

Keys: ``random_label_epochs``, ``random_label_lr``, ``random_label_optimizer``,
``random_label_momentum``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from config import Config
from data.batches import batch_indices, num_batches
from data.rng import draw_to, generator
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.gradient import as_floats, cross_entropy, optimizer, settings
from unlearn.search_space import Param, integer, log_float


def other_labels(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """For every label, one drawn uniformly from the ``num_classes - 1`` others."""
    if num_classes < 2:
        raise ValueError(f"random labels need at least 2 classes, got {num_classes}")
    shift = draw_to(torch.randint(1, num_classes, labels.shape, generator=gen), labels.device)
    return (labels + shift) % num_classes


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Train ``model`` in place on D_f with random labels and D_r; returns the per-step losses."""
    s = settings(cfg, "random_label")
    data, split = task.data, task.split
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    opt = optimizer(model, s, cfg.weight_decay, runtime)
    forget, remain = split.forget.to(device), split.remain.to(device)
    rows = torch.cat([forget, remain])
    order = generator(task.seed, "random_label/order")
    augment = generator(task.seed, "random_label/augment")
    relabel = generator(task.seed, "random_label/labels")
    model.train()
    losses = []
    steps = num_batches(len(rows), cfg.batch_size)
    for epoch in range(s.epochs):
        labels = torch.cat([other_labels(data.train.labels[forget], data.num_classes, relabel),
                            data.train.labels[remain]])
        bar = tqdm(batch_indices(len(rows), cfg.batch_size, True, order, device), total=steps,
                   desc=f"random_label epoch {epoch + 1}/{s.epochs}", leave=False)
        for pos in bar:
            x = data.inputs(data.train.images[rows[pos]], train=True, gen=augment)
            loss = cross_entropy(model, x, labels[pos], runtime)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return {"loss": as_floats(losses), "relabelled": len(forget)}


# SalUn (appendix) searches RL's learning rate in [0.01, 0.1]; widened down a decade, epochs 1 to 10.
SEARCH_SPACE: dict[str, Param] = {
    "random_label_lr": log_float(1e-3, 1e-1),
    "random_label_epochs": integer(1, 10),
}
