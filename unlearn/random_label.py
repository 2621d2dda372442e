"""RL (random labels): SalUn's random-label loop with every weight free (no saliency mask).

As in "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Image
Classification" (Fan et al., ICLR 2024) and "Model Sparsity Can Simplify Machine
Unlearning" (Jia et al., NeurIPS 2023). In the SalUn release
(OPTML-Group/Unlearn-Saliency@a6e89fd, ``Classification/unlearn/RL.py`` ``RL``) RL and
SalUn are one function: SalUn passes a saliency mask, RL none (equivalently the
``with_1.0.pt`` mask that ``generate_mask.py`` writes for threshold 1.0). Here too both run
``unlearn.salun.relabel_passes``, with the same random streams (batch order and random
labels), so RL against SalUn isolates the saliency mask:

- per epoch one pass over D_f with labels drawn uniformly over *all* classes (the true
  one included; ``torch.randint`` per batch, as the release's CIFAR-10 branch), then one
  pass over D_r with the true labels;
- SGD, momentum 0.9, weight decay 5e-4 (``arg_parser.py``), batch 256 (``arg_parser.py``
  ``--batch_size``), 10 epochs (``--unlearn_epochs``); the MultiStep milestones (91, 136)
  are never reached, so the learning rate is constant.

Learning rate 0.01: the release's ``--unlearn_lr`` default, the low end of the RL range in
the SalUn appendix ([0.01, 0.1]); SalUn's own README example uses 0.013. The release gives
no MNIST setting, so the CIFAR values are the defaults everywhere. An earlier version of
this file ran 1 epoch of one shuffled mix of D_f and D_r at batch 32 with the shared weight
decay (1e-4) and labels from the other classes only; its committed cells are stale.

Keys: ``random_label_epochs``, ``random_label_lr``, ``random_label_optimizer``,
``random_label_momentum``, ``random_label_weight_decay``, ``random_label_batch_size``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from config import Config
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.gradient import as_floats, settings
from unlearn.salun import RelabelSettings, relabel_passes
from unlearn.search_space import Param, integer, log_float


def relabel_settings(cfg: Config) -> RelabelSettings:
    """RL's loop settings from its ``random_label_*`` keys, checked (ValueError names the key)."""
    s = settings(cfg, "random_label")
    if cfg.random_label_weight_decay < 0:
        raise ValueError(f"random_label_weight_decay: {cfg.random_label_weight_decay} must be at least 0")
    if cfg.random_label_batch_size < 1:
        raise ValueError(f"random_label_batch_size: {cfg.random_label_batch_size} must be at least 1")
    return RelabelSettings(s.epochs, s.lr, s.optimizer, s.momentum, cfg.random_label_weight_decay,
                           cfg.random_label_batch_size)


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Train ``model`` in place on D_f with random labels, then on D_r, each epoch; returns the per-step losses."""
    s = relabel_settings(cfg)
    runtime = Runtime.from_config(cfg, task.data.train.labels.device)
    forget_losses, remain_losses = relabel_passes(model, task, s, None, runtime)
    return {"loss_forget": as_floats(forget_losses), "loss_remain": as_floats(remain_losses),
            "relabelled": len(task.split.forget)}


# SalUn (appendix) searches RL's learning rate in [0.01, 0.1], for SGD-trained ResNets. Our originals are
# trained with Adam at 1e-3, and SGD steps on random labels at lr >= 0.006 collapse the Fashion-MNIST CNN to
# chance; with lr from 1e-3 up, no trial of a Fashion-MNIST random-removal study kept D_t within 5 points of the
# retrained model's, and the MNIST studies' best trials sat at 1.4e-3 and 1.6e-3. So its low end goes two
# decades below SalUn's. Epochs 1 to the release's 10.
SEARCH_SPACE: dict[str, Param] = {
    "random_label_lr": log_float(1e-4, 1e-1),
    "random_label_epochs": integer(1, 10),
}
