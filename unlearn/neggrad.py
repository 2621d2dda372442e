"""NG (NegGrad, gradient ascent): raise the cross-entropy on D_f, nothing else.

The plain form the CaMU paper compares against: the original's own training loss on the
forget set, maximised (descent on its negative); D_r is never seen. The budget follows
the GA baseline of the Unlearn-Sparse and SalUn releases ("Model Sparsity Can Simplify
Machine Unlearning", Jia et al., NeurIPS 2023; "SalUn", Fan et al., ICLR 2024; README
commands and ``unlearn/GA.py``): lr 1e-4 and at most 5 passes over D_f (ResNet-18 on
CIFAR-10; no MNIST-size setting is given).

Ascent on cross-entropy has no optimum: once D_f is misclassified the loss grows without
bound, and on a saturated MNIST model nothing happens for a while and then everything
collapses within a few dozen steps (measured on MNIST class 0, seed 0, one pass = 186
steps: with the release's SGD, momentum 0.9, lr 1e-4, D_f stays at 99.9% after 5 passes;
with SGD at lr 1e-3 the loss is NaN by the end of the second pass; Adam at lr 1e-4
reaches D_f 5% / D_r 99% after 93 steps and D_r 10% (one class for everything) after
186, with a finite loss of about 1e8 after 5 passes). Two choices keep it bounded:

- Adam (the optimiser of the original's training and of CaMU) instead of SGD: a step
  moves each weight by about ``lr`` whatever the size of the gradient, so a bounded
  number of steps cannot blow the weights up to inf / NaN as SGD's growing steps do.
- An early stop: the ascent ends at the first forget batch the model gets entirely wrong
  (accuracy <= ``neggrad_stop_acc`` percent, default 0), i.e. when what it sees of D_f is
  forgotten. The batch accuracies are read every ``neggrad_stop_every`` (8) steps in one
  host sync, so the stop lands at the end of that window (``1``: checked before every step,
  the per-batch rule with which the committed NG cells were computed; measured then on
  MNIST class 0, seed 0: stops after 94 steps at D_f 1.6%, D_r 98.1%, D_t,r 97.5%, D_t,f
  1.3%; seed 1: 84 steps, D_f 2.2%, D_r 98.6%). A negative value runs
  the whole budget (plain NG of a fixed length; the traces still say whether every loss
  stayed finite).

The release's exact setting is ``neggrad_optimizer=sgd neggrad_stop_acc=-1``. In the
random scenario NG has no notion of how much to forget and collapses D_r as well (MNIST
10% random, seed 0: stops after 148 steps at D_f 15%, D_r 14%): that is the method, not
a bug.

Keys: ``neggrad_epochs``, ``neggrad_lr``, ``neggrad_optimizer``, ``neggrad_momentum``,
``neggrad_stop_acc``.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import nn

from config import Config
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.gradient import StopRule, as_floats, check_stop_acc, optimizer, settings
from unlearn.loop import batches
from unlearn.search_space import Param, integer, log_float


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Gradient ascent on D_f, on ``model`` in place; returns the per-step forget losses (ascending)."""
    s = settings(cfg, "neggrad")
    forgotten = StopRule(check_stop_acc(cfg.neggrad_stop_acc, "neggrad_stop_acc"), cfg.neggrad_stop_every)
    device = task.data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    opt = optimizer(model, s, cfg.weight_decay, runtime)
    model.train()
    losses = []
    stopped_at = None
    for step, (_, x, y) in enumerate(batches(task, task.split.forget, cfg.batch_size, s.epochs, "neggrad")):
        with runtime.autocast(device):
            logits, _ = model(x)
        logits = logits.float()
        loss = F.cross_entropy(logits, y)
        if forgotten(logits, y):
            stopped_at = step
            break
        opt.zero_grad()
        (-loss).backward()
        opt.step()
        losses.append(loss.detach())
    trace = as_floats(losses)
    return {"loss_forget": trace, "steps": len(trace), "stopped_at": stopped_at,
            "finite": all(math.isfinite(v) for v in trace)}


# SalUn (appendix) searches GA's learning rate in [1e-6, 1e-3] over 5 epochs; epochs 1 to 10.
SEARCH_SPACE: dict[str, Param] = {
    "neggrad_lr": log_float(1e-6, 1e-3),
    "neggrad_epochs": integer(1, 10),
}
