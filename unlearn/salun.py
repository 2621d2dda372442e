"""SalUn: random-label unlearning restricted to the weights salient for the forget set.

Fan, Liu, Zhang, Wong, Wei and Liu, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024.

1. Saliency mask: on the model before unlearning (eval mode), sum the gradients of the
   forget loss -CE(f(x_f), y_f) over mini-batches of D_f, take magnitudes, and free the
   ``salun_threshold`` share of all weights with the largest magnitude (one global ranking
   over every parameter tensor; mask 1 = may update, 0 = frozen).
2. Random-label unlearning: each epoch one pass over D_f with labels drawn uniformly from
   all classes (afresh per batch), then one pass over D_r with the true labels; SGD with
   momentum and weight decay, every step's gradient (weight decay included) multiplied by
   the mask, so frozen weights keep their original value exactly (momentum buffers of
   frozen weights stay zero).

Defaults: the public release (github.com/OPTML-Group/Unlearn-Saliency), Classification/:
README's SalUn example for ResNet-18 on CIFAR-10 (``main_random.py --unlearn RL
--unlearn_epochs 10 --unlearn_lr 0.013 --mask_path mask/with_0.5.pt``), arg_parser.py's
batch_size 256, momentum 0.9, weight_decay 5e-4; the MultiStep schedule's milestones
(91, 136) are never reached in 10 epochs, so the learning rate is constant. The mask as in
generate_mask.py (gradients of -CE summed over the forget loader, magnitudes, top share by
global rank; 0.5 is the paper's default sparsity). The forget-then-remain order and the
uniform labels over all classes are unlearn/RL.py's CIFAR-10 branch (its CIFAR-100 branch
shuffles both sets together; one order is used here for every dataset). The release gives
no MNIST setting, so these CIFAR values are the defaults everywhere.

The loop (``relabel_passes``) is shared with RL (``unlearn/random_label.py``): in the
release RL is this same function without a mask, so ``salun_threshold`` 1.0 is RL (no mask
pass is run then), and RL draws the same batch order and random labels as SalUn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from config import Config
from data.rng import draw_to, generator
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.loop import batches, make_optimizer
from unlearn.search_space import Param, integer, log_float, uniform


def top_fraction_mask(scores: list[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """Per tensor, 1.0 where the score is among the ``fraction`` largest of all scores together, else 0.0.

    ``int(fraction * total)`` entries are set, as the release's rank threshold; ties are
    broken by ``torch.topk``.
    """
    flat = torch.cat([s.flatten() for s in scores])
    keep = int(len(flat) * fraction)
    mask = torch.zeros_like(flat)
    if keep:
        mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return [m.view_as(s) for m, s in zip(mask.split([s.numel() for s in scores]), scores, strict=True)]


def saliency_mask(model: nn.Module, task: UnlearnTask, cfg: Config, runtime: Runtime) -> list[torch.Tensor]:
    """The mask of every parameter of ``model`` (in ``model.parameters()`` order), from D_f's forget loss."""
    device = task.data.train.labels.device
    params = list(model.parameters())
    was_training = model.training
    model.eval()
    total = [torch.zeros_like(p) for p in params]
    for _, x, y in batches(task, task.split.forget, cfg.salun_batch_size, 1, "salun/mask", desc="salun mask"):
        with runtime.autocast(device):
            logits = model(x)[0].float()
        grads = torch.autograd.grad(-F.cross_entropy(logits, y), params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
        torch._foreach_add_(total, grads)
    model.train(was_training)
    return top_fraction_mask([t.abs() for t in total], cfg.salun_threshold)


def _check(cfg: Config) -> None:
    if not 0.0 < cfg.salun_threshold <= 1.0:
        raise ValueError(f"salun_threshold: {cfg.salun_threshold} must lie in (0, 1]")
    if cfg.salun_epochs < 0:
        raise ValueError(f"salun_epochs: {cfg.salun_epochs} must be at least 0")
    if cfg.salun_batch_size < 1:
        raise ValueError(f"salun_batch_size: {cfg.salun_batch_size} must be at least 1")
    if not cfg.salun_lr > 0:
        raise ValueError(f"salun_lr: {cfg.salun_lr} must be greater than 0")


@dataclass(frozen=True)
class RelabelSettings:
    """The random-label loop's settings (SalUn's ``salun_*`` keys, or RL's ``random_label_*`` keys)."""

    epochs: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    batch_size: int


def relabel_passes(model: nn.Module, task: UnlearnTask, s: RelabelSettings, mask: list[torch.Tensor] | None,
                   runtime: Runtime) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The release's ``unlearn/RL.py`` loop (CIFAR-10 branch) on ``model`` in place: per epoch a D_f pass with
    labels uniform over all classes, then a D_r pass; returns the (forget, remain) per-step losses.

    Weight decay is added to each gradient before it is multiplied by ``mask`` (``None``: no
    mask, every weight free, which is the release's RL), so frozen weights never move. SalUn
    and RL both call this with the same random streams (``salun/...``): same batch order and
    same random labels, so the two differ by the mask alone.
    """
    data, split = task.data, task.split
    device = data.train.labels.device
    params = list(model.parameters())
    opt = make_optimizer(params, s.optimizer, s.lr, 0.0, s.momentum, fused=runtime.fused_adam)
    labels = generator(task.seed, "salun/labels")
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with runtime.autocast(device):
            logits = model(x)[0].float()
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            if s.weight_decay:
                torch._foreach_add_(grads, params, alpha=s.weight_decay)
            if mask is not None:
                torch._foreach_mul_(grads, mask)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        opt.step()
        return loss.detach()

    forget_losses: list[torch.Tensor] = []
    remain_losses: list[torch.Tensor] = []
    for epoch in range(s.epochs):
        for _, x, _ in batches(task, split.forget, s.batch_size, 1, f"salun/forget{epoch}",
                               desc=f"random labels: forget {epoch + 1}/{s.epochs}"):
            y_random = draw_to(torch.randint(0, data.num_classes, (x.shape[0],), generator=labels), device)
            forget_losses.append(step(x, y_random))
        for _, x, y in batches(task, split.remain, s.batch_size, 1, f"salun/remain{epoch}",
                               desc=f"random labels: remain {epoch + 1}/{s.epochs}"):
            remain_losses.append(step(x, y))
    return forget_losses, remain_losses


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Run SalUn on ``model`` in place; returns the per-step losses and the mask's size.

    ``salun_threshold`` 1.0 frees every weight: no mask pass is run and the loop is RL's.
    """
    _check(cfg)
    device = task.data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    params = list(model.parameters())
    mask = saliency_mask(model, task, cfg, runtime) if cfg.salun_threshold < 1.0 else None
    s = RelabelSettings(cfg.salun_epochs, cfg.salun_lr, "sgd", cfg.salun_momentum, cfg.salun_weight_decay,
                        cfg.salun_batch_size)
    forget_losses, remain_losses = relabel_passes(model, task, s, mask, runtime)
    weights = sum(p.numel() for p in params)
    freed = int(torch.stack([m.sum() for m in mask]).sum().item()) if mask is not None else weights
    return {"loss_forget": torch.stack(forget_losses).tolist() if forget_losses else [],
            "loss_remain": torch.stack(remain_losses).tolist() if remain_losses else [],
            "mask_weights": freed, "weights": weights}


# SalUn (Fan et al., ICLR 2024, appendix) sweeps the mask's share from 10 % to 90 % and the RL
# learning rate in [0.01, 0.1]; widened two decades down as RL's (unlearn/random_label.py: the same loop on
# Adam-trained originals), epochs 1 to the release's 10.
SEARCH_SPACE: dict[str, Param] = {
    "salun_threshold": uniform(0.1, 0.9),
    "salun_lr": log_float(1e-4, 1e-1),
    "salun_epochs": integer(1, 10),
}
