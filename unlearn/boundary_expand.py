"""Boundary Expanding: send the forget samples to an extra shadow class, then prune it.

Chen, Gao, Liu, Peng, Wang, "Boundary Unlearning: Rapid Forgetting of Deep Networks via
Shifting the Decision Boundary", CVPR 2023, Sec. 4.2, and the authors' released code
(TY-LEE-KR/Boundary-Unlearning-Code@86c2f1f, ``boundary_unlearning.py`` ``boundary_expanding``):

1. The last Linear layer (``model.classifier``) is widened by one output neuron, the
   shadow class: the trained rows are copied, the new row is initialised as the
   release's ``models.init_params`` does for a Linear layer (weight ``xavier_normal_``,
   std sqrt(2 / (fan_in + classes + 1)), about 0.12 for the MNIST CNN's 128 features;
   bias 0; drawn here from the ``boundary_expand/shadow`` stream of the task's seed).
   An earlier version of this file drew N(0, 1e-3^2), a misreading of the release.
   Measured with the defaults on MNIST class 0, seed 0, the 20-epoch original, CPU:
   D_f 18.7 %, D_r 90.9 %, D_t 83.7 % (the N(0, 1e-3^2) row at batch 32 gave D_f 34.4 %,
   D_r 87.9 %).
2. The whole widened model is fine-tuned with cross-entropy of D_f against the shadow
   class: SGD, lr 1e-5, momentum 0.9, no weight decay, 10 epochs (the paper: "a learning
   rate of 1e-5 for 10 epochs"; the release's values, set for CIFAR-10 and VGGFace2,
   are the defaults here too since it gives none for MNIST).
3. The shadow neuron is pruned: the last layer goes back to the original's shape,
   keeping the fine-tuned rows of the real classes.

Batches: ``boundary_expand_batch_size`` = 64, the release's forget loader (``main.py``
``--batch_size`` default), not the original's ``batch_size``. (The SalUn release's copy,
``unlearn/boundary_ex.py``, keeps ``nn.Linear``'s default initialisation for the shadow
row; the authors' release is followed here.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from config import Config
from data.rng import generator
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.boundary import narrow, widen
from unlearn.loop import batches, make_optimizer
from unlearn.search_space import Param, integer, log_float


def check(cfg: Config) -> None:
    if cfg.boundary_expand_epochs < 0:
        raise ValueError(f"boundary_expand_epochs: {cfg.boundary_expand_epochs} must be at least 0")
    if not cfg.boundary_expand_lr > 0:
        raise ValueError(f"boundary_expand_lr: {cfg.boundary_expand_lr} must be greater than 0")
    if not 0 <= cfg.boundary_expand_momentum < 1:
        raise ValueError(f"boundary_expand_momentum: {cfg.boundary_expand_momentum} must lie in [0, 1)")
    if cfg.boundary_expand_batch_size < 1:
        raise ValueError(f"boundary_expand_batch_size: {cfg.boundary_expand_batch_size} must be at least 1")


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Boundary Expanding on ``model`` in place; returns the per-step losses."""
    check(cfg)
    data = task.data
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    classes = model.classifier.out_features
    model.set_classifier(widen(model.classifier, generator(task.seed, "boundary_expand/shadow")))
    opt = make_optimizer(model.parameters(), "sgd", cfg.boundary_expand_lr, 0.0, cfg.boundary_expand_momentum)
    model.train()
    losses = []
    for _, x, y in batches(task, task.split.forget, cfg.boundary_expand_batch_size, cfg.boundary_expand_epochs,
                            "boundary_expand"):
        with runtime.autocast(device):
            logits, _ = model(x)
        shadow = torch.full_like(y, classes)  # every forget sample belongs to the shadow class
        loss = F.cross_entropy(logits.float(), shadow)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.set_classifier(narrow(model.classifier, classes))
    return {"loss": torch.stack(losses).tolist() if losses else [], "shadow_class": classes}


# Boundary Unlearning (Chen et al., CVPR 2023): no sweep published; as boundary_shrink.
SEARCH_SPACE: dict[str, Param] = {
    "boundary_expand_lr": log_float(1e-7, 1e-3),
    "boundary_expand_epochs": integer(1, 20),
}
