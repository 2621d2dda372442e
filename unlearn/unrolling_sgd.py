"""Unrolling SGD: single-gradient unlearning.

Thudi, Deza, Chandrasekaran, Papernot, "Unrolling SGD: Understanding Factors Influencing
Machine Unlearning", IEEE EuroS&P 2022, and the authors' release (cleverhans-lab
unrolling-sgd, ``Unlearning/cumulative_verification.py``, the "gradient ascent" block).

Unrolling T steps of SGD around the initial weights, the first-order contribution of a
batch to the final weights is -lr * grad of that batch's (mean) loss, once per epoch it
was seen. Single-gradient unlearning adds that term back, with the gradient taken at the
final weights (the release: ``w + finetune_epochs * lr * grad``, the gradient computed on
the trained model in train mode). Over all of D_f, batched as in training:

    w <- w + scale * train_epochs * train_lr / batch_size * sum_{x in D_f} grad loss(w; x)

with ``train_lr``, ``train_epochs`` and ``batch_size`` those of the original model
(``cfg.train_lr`` etc.) and ``scale = unrolling_sgd_scale`` (1 is the paper's step).

Notes:
- The derivation assumes plain SGD; the original model here is trained with Adam (the
  CaMU release's recipe), whose steps do not scale with the gradient, so at scale 1 the
  step is far smaller than what the forget samples moved. ``unrolling_sgd_scale`` is
  the knob; its default stays the paper's.
- D_f's rows are taken once each (``forget_repeat`` duplicates are dropped): the term
  undoes training, where each sample was seen once per epoch.
- The release unlearns a single batch of 32 samples (``--unlearn_batch``: ``batch_star``,
  the gradient of its mean loss); the method's derivation and its experiments are about
  that regime. Removing a whole class (about 6,000 MNIST samples) is far outside it: an
  outside review on MNIST class 0, seed 0, found no ``unrolling_sgd_scale`` that both
  forgets and keeps (scale 1 / 3 / 5 / 10 / 30: D_f 99.9 / 98.3 / 88 / 13 / 0 %, D_r
  99.4 / 98.4 / 95.6 / 75 / 18 %). Its class-removal rows show the method out of its
  regime, not a fault of this port.
- The gradient is computed in train mode, as in the release; models with BatchNorm see
  batches of ``batch_size`` (batch statistics as in training) and get their running
  statistics back afterwards, so only the weights move.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from config import Config
from models.runtime import Runtime
from unlearn.base import UnlearnTask, has_batch_statistics
from unlearn.loop import batches
from unlearn.search_space import Param, log_float


def check(cfg: Config) -> None:
    if not math.isfinite(cfg.unrolling_sgd_scale):
        raise ValueError(f"unrolling_sgd_scale: {cfg.unrolling_sgd_scale} must be a finite number")


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """One step of single-gradient unlearning on ``model`` in place; returns the step's size."""
    check(cfg)
    data = task.data
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    forget = task.split.forget.unique()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    # without batch statistics the sum of gradients does not depend on the batching: use large chunks
    chunk = cfg.batch_size if has_batch_statistics(model) else max(cfg.batch_size, cfg.eval_batch_size)
    loss_sum = torch.zeros((), device=device)
    for _, x, y in batches(task, forget, chunk, 1, "unrolling_sgd"):
        with runtime.autocast(device):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        for g, d in zip(grads, torch.autograd.grad(loss, params), strict=True):
            g.add_(d)
        loss_sum += loss.detach()
    factor = cfg.unrolling_sgd_scale * cfg.train_epochs * cfg.train_lr / cfg.batch_size
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(g, alpha=factor)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else None
    return {"step_factor": factor, "forget_rows": len(forget),
            "forget_loss": (loss_sum / max(len(forget), 1)).item(),
            "grad_norm": grad_norm.item() if grad_norm is not None else 0.0,
            "step_norm": abs(factor) * grad_norm.item() if grad_norm is not None else 0.0}


# Thudi et al. (EuroS&P 2022) take one step of scale 1; no sweep. Two decades each way.
SEARCH_SPACE: dict[str, Param] = {
    "unrolling_sgd_scale": log_float(1e-2, 1e2),
}
