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

The release's exact setting is ``neggrad_optimizer=sgd neggrad_stop_acc=-1
neggrad_batch_size=256``.

The stop above suits class removal only: there the retrained model gets D_f entirely wrong.
In random removal it keeps about its test accuracy on D_f (~99 % on MNIST), so the ascent
should stop near there, not at 0 % (with the per-batch rule at 0 %, MNIST 10 % random,
seed 0: stops after 148 steps at D_f 15 %, D_r 14 %; with a per-batch stop at 97 % an
outside review saw it stop after 2 steps on one noisy batch). In random removal the rule is
therefore the running mean of the last ``neggrad_random_stop_window`` (8) forget batches at
most ``neggrad_random_stop_acc``; its default 0 stands for the original's accuracy on the
test set, a held-out estimate of the retrained model's D_f accuracy (one evaluation pass
before the ascent; the traces give it as ``stop_target``). Measured with the defaults on
MNIST 10 % random, seed 0, the 20-epoch original: target 99.12 %, stops after 40 steps at
D_f 99.2 %, D_r 99.4 %, D_t 98.8 % (CPU, not a committed cell). The host still reads the
accuracies only every ``neggrad_stop_every`` steps (``unlearn.gradient.StopRule``). The
SalUn / Unlearn-Sparse GA and the SCRUB release's NegGrad have no stop at all: they run a
fixed budget (``neggrad_stop_acc=-1 neggrad_random_stop_acc=-1``).

Batches: ``neggrad_batch_size`` = 32, the CaMU release's batch, with whose Adam recipe this
NG runs (the GA release's SGD uses 256: ``arg_parser.py`` ``--batch_size``); the original's
``batch_size`` is left to the original.

Keys: ``neggrad_epochs``, ``neggrad_lr``, ``neggrad_optimizer``, ``neggrad_momentum``,
``neggrad_batch_size``, ``neggrad_stop_acc``, ``neggrad_stop_every``,
``neggrad_random_stop_acc``, ``neggrad_random_stop_window``.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import nn

from config import Config
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.gradient import as_floats, optimizer, settings, stop_rule
from unlearn.loop import batches
from unlearn.search_space import Param, integer, log_float


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Gradient ascent on D_f, on ``model`` in place; returns the per-step forget losses (ascending)."""
    s = settings(cfg, "neggrad")
    if cfg.neggrad_batch_size < 1:
        raise ValueError(f"neggrad_batch_size: {cfg.neggrad_batch_size} must be at least 1")
    device = task.data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    forgotten, target = stop_rule(cfg, "neggrad", original, task, runtime)
    opt = optimizer(model, s, cfg.weight_decay, runtime)
    model.train()
    losses = []
    stopped_at = None
    for step, (_, x, y) in enumerate(batches(task, task.split.forget, cfg.neggrad_batch_size, s.epochs, "neggrad")):
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
    return {"loss_forget": trace, "steps": len(trace), "stopped_at": stopped_at, "stop_target": target,
            "finite": all(math.isfinite(v) for v in trace)}


# SalUn (appendix) searches GA's learning rate in [1e-6, 1e-3] over 5 epochs; epochs 1 to 10.
SEARCH_SPACE: dict[str, Param] = {
    "neggrad_lr": log_float(1e-6, 1e-3),
    "neggrad_epochs": integer(1, 10),
}
