"""NG+ (NegGrad+): descent on D_r and ascent on D_f in one loss, weighted by alpha.

As defined in "Towards Unbounded Machine Unlearning" (Kurmanji, Triantafillou, Hayes,
Triantafillou; NeurIPS 2023, the SCRUB paper), per pair of batches

    loss = alpha * CE(f(x_r), y_r) - (1 - alpha) * CE(f(x_f), y_f),

iterating D_r once per epoch with D_f cycled alongside (a D_f batch for every D_r batch).
Settings of the SCRUB release (``small_scale_unlearning.ipynb``, NegGrad cell): alpha
0.95, plain SGD (no momentum) at lr 0.01, 10 epochs, and instead of weight decay toward
zero an L2 pull toward the original's weights, weighted like the D_r loss:
``alpha * weight_decay / 2 * ||theta - theta_original||^2``. Here that pull uses the
shared ``weight_decay``, added to the gradients in place of the optimiser's decay. The
model is in train mode (the release's loop leaves it in eval mode, which only differs
for BatchNorm). The release gives no MNIST-size setting.

The ascent term is unbounded like NG's, and alpha only delays its take-over. Measured on
MNIST class 0, seed 0, one pass over D_r (1,690 steps): the release's SGD at lr 0.01
leaves D_f at 99.9% (the saturated model's forget gradient is about zero); SGD with
momentum 0.9 collapses everything (D_r 10% or less) by step 300; Adam at lr 1e-4 starts forgetting
after about 600 steps, has D_f 0% / D_r 87% at step 700 and D_r about 12% from step 1,100
on. So, as for NG (see neggrad.py): Adam at lr 1e-4, and the same early stop, at the first
forget batch the model gets entirely wrong (``neggrad_plus_stop_acc`` percent, default 0;
negative: run the whole budget). The epoch budget is an upper limit: 1 pass
(``neggrad_plus_epochs``) instead of the release's 10 keeps full MNIST within the CPU
budget. The release's exact setting is ``neggrad_plus_optimizer=sgd neggrad_plus_lr=0.01
neggrad_plus_epochs=10 neggrad_plus_stop_acc=-1``. With the defaults, MNIST class 0, seed 0:
stops after 633 steps at D_f 0.8%, D_r 99.6%, D_t,r 99.0%; MNIST 10% random, seed 0: never
stops, D_f 99.9%, D_r 99.98% (the D_r term holds the model, the ascent never takes off).

Stop in random removal: as NG's (see neggrad.py), the running mean of the last
``neggrad_plus_random_stop_window`` forget batches at most ``neggrad_plus_random_stop_acc``
(0: the original's test accuracy); the SCRUB release's ``negative_grad`` has no stop (a
fixed number of epochs).

Batches (the SCRUB release's ``small_scale_unlearning.ipynb``: ``args.retain_bs = 32``,
``args.forget_bs = 64``): ``neggrad_plus_batch_size`` = 32 over D_r and
``neggrad_plus_forget_batch_size`` = 64 over D_f, not the original's ``batch_size``.

Keys: ``neggrad_plus_epochs``, ``neggrad_plus_lr``, ``neggrad_plus_optimizer``,
``neggrad_plus_momentum``, ``neggrad_plus_alpha``, ``neggrad_plus_batch_size``,
``neggrad_plus_forget_batch_size``, ``neggrad_plus_stop_acc``, ``neggrad_plus_stop_every``,
``neggrad_plus_random_stop_acc``, ``neggrad_plus_random_stop_window``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from config import Config
from models.runtime import Runtime
from unlearn.base import UnlearnTask, forward_pair
from unlearn.gradient import as_floats, endless_batches, optimizer, settings, stop_rule
from unlearn.loop import batches
from unlearn.search_space import Param, integer, log_float, uniform


def neggrad_plus_loss(logits_r: torch.Tensor, y_r: torch.Tensor, logits_f: torch.Tensor, y_f: torch.Tensor,
                      alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha * CE_r - (1 - alpha) * CE_f, CE_r, CE_f)``, mean-reduced cross-entropies."""
    ce_r = F.cross_entropy(logits_r, y_r)
    ce_f = F.cross_entropy(logits_f, y_f)
    return alpha * ce_r - (1.0 - alpha) * ce_f, ce_r, ce_f


@torch.no_grad()
def pull_toward(model: nn.Module, anchor: nn.Module, weight: float) -> None:
    """Add ``weight * (theta - theta_anchor)`` to every gradient: the gradient of
    ``weight / 2 * ||theta - theta_anchor||^2``, without building it into the graph."""
    if weight == 0:
        return
    for p, p0 in zip(model.parameters(), anchor.parameters(), strict=True):
        if p.grad is not None:
            p.grad.add_(p - p0, alpha=weight)


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Run NegGrad+ on ``model`` in place; returns the per-step losses on D_r and D_f."""
    s = settings(cfg, "neggrad_plus")
    alpha = cfg.neggrad_plus_alpha
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"neggrad_plus_alpha: {alpha} must lie in [0, 1]")
    for key in ("neggrad_plus_batch_size", "neggrad_plus_forget_batch_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: {getattr(cfg, key)} must be at least 1")
    device = task.data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    forgotten, target = stop_rule(cfg, "neggrad_plus", original, task, runtime)
    opt = optimizer(model, s, 0.0, runtime)  # the decay is the pull toward the original below
    original.eval()
    model.train()
    forget = endless_batches(task, task.split.forget, cfg.neggrad_plus_forget_batch_size, "neggrad_plus/forget")
    losses, remain_losses, forget_losses = [], [], []
    stopped_at = None
    remain = batches(task, task.split.remain, cfg.neggrad_plus_batch_size, s.epochs, "neggrad_plus/remain",
                     desc="neggrad_plus")
    for step, (_, x_r, y_r) in enumerate(remain):
        x_f, y_f = next(forget)
        with runtime.autocast(device):
            (logits_r, _), (logits_f, _) = forward_pair(model, x_r, x_f)
        loss, ce_r, ce_f = neggrad_plus_loss(logits_r.float(), y_r, logits_f.float(), y_f, alpha)
        if forgotten(logits_f, y_f):
            stopped_at = step
            break
        opt.zero_grad()
        loss.backward()
        pull_toward(model, original, alpha * cfg.weight_decay)
        opt.step()
        losses.append(loss.detach())
        remain_losses.append(ce_r.detach())
        forget_losses.append(ce_f.detach())
    loss_r, loss_f = as_floats(remain_losses), as_floats(forget_losses)
    return {"loss": as_floats(losses), "loss_remain": loss_r, "loss_forget": loss_f, "steps": len(loss_r),
            "stopped_at": stopped_at, "stop_target": target, "finite": all(math.isfinite(v) for v in loss_r + loss_f)}


# SCRUB (Kurmanji et al., NeurIPS 2023) tunes NegGrad+'s learning rate and alpha per scenario;
# its release's 0.01 (SGD) down to 1e-6, alpha from an even mix to almost all retain loss.
SEARCH_SPACE: dict[str, Param] = {
    "neggrad_plus_lr": log_float(1e-6, 1e-2),
    "neggrad_plus_epochs": integer(1, 10),
    "neggrad_plus_alpha": uniform(0.5, 0.999),
}
