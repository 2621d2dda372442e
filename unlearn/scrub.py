"""SCRUB: student-teacher unlearning by alternating max and min steps.

Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded Machine Unlearning",
NeurIPS 2023. The student is ``model`` (it starts as the original), the teacher the frozen
``original``. With d(x) = KL(p_teacher(x) || p_student(x)) at temperature T, each epoch
e = 1..scrub_epochs runs

- when e <= scrub_msteps, a max pass over D_f: steps that minimise -d(x_f), pushing the
  student away from the teacher on the data to forget;
- then a min pass over D_r: steps that minimise gamma * CE(student(x_r), y_r) + alpha * d(x_r),
  keeping the student close to the teacher (and correct) on the data to keep.

d is the distillation loss of the release (RepDistiller's KL): summed over the batch of
KL(softmax(t / T) || softmax(s / T)), times T^2, divided by the batch size. The student is
in train mode, the teacher in eval mode, and one SGD optimiser serves both passes.

Defaults: the public release (github.com/meghdadk/SCRUB), large_scale_unlearning.ipynb,
"SCRUB Forgetting" cell (CIFAR-10 class forgetting): optim sgd, sgda_learning_rate 5e-4,
sgda_momentum 0.9, sgda_weight_decay 5e-4, sgda_epochs 3, msteps 2, kd_T 4, gamma 0.99,
alpha 0.001, beta 0 (no further distillation term), lr_decay_epochs [3, 5, 9] with rate 0.1
(lr x 0.1 per entry that the 1-based epoch exceeds: no decay within 3 epochs); the forget
loader has batch 512 and the retain loader batch 256. The release gives no MNIST setting,
so these CIFAR values are the defaults everywhere.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from config import Config
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.loop import batches, make_optimizer
from unlearn.search_space import Param, integer, log_float, uniform


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t / T) || softmax(s / T)) summed over the batch, times T^2, over the batch size."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="sum") * temperature**2 / student_logits.shape[0]


def learning_rate(epoch: int, cfg: Config) -> float:
    """The release's step schedule: lr x rate for every decay epoch that the 1-based ``epoch`` exceeds."""
    passed = sum(1 for d in cfg.scrub_lr_decay_epochs if epoch > d)
    return cfg.scrub_lr * cfg.scrub_lr_decay_rate**passed


def _check(cfg: Config) -> None:
    for key in ("scrub_epochs", "scrub_msteps"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key}: {getattr(cfg, key)} must be at least 0")
    for key in ("scrub_forget_batch_size", "scrub_remain_batch_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: {getattr(cfg, key)} must be at least 1")
    if not cfg.scrub_kd_t > 0:
        raise ValueError(f"scrub_kd_t: {cfg.scrub_kd_t} must be greater than 0")
    if not cfg.scrub_lr > 0:
        raise ValueError(f"scrub_lr: {cfg.scrub_lr} must be greater than 0")


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Run SCRUB on ``model`` in place; returns the per-step max and min losses."""
    _check(cfg)
    device = task.data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    opt = make_optimizer(model.parameters(), "sgd", cfg.scrub_lr, cfg.scrub_weight_decay, cfg.scrub_momentum)
    original.eval()
    model.train()
    T = cfg.scrub_kd_t

    def logits_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), runtime.autocast(device):
            teacher = original(x)[0].float()
        with runtime.autocast(device):
            student = model(x)[0].float()
        return student, teacher

    def step(loss: torch.Tensor) -> torch.Tensor:
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    max_losses: list[torch.Tensor] = []
    min_losses: list[torch.Tensor] = []
    for epoch in range(1, cfg.scrub_epochs + 1):
        for group in opt.param_groups:
            group["lr"] = learning_rate(epoch, cfg)
        if epoch <= cfg.scrub_msteps:
            for _, x, _ in batches(task, task.split.forget, cfg.scrub_forget_batch_size, 1,
                                   f"scrub/max{epoch}", desc=f"scrub max {epoch}/{cfg.scrub_msteps}"):
                student, teacher = logits_pair(x)
                max_losses.append(step(-distill_kl(student, teacher, T)))
        for _, x, y in batches(task, task.split.remain, cfg.scrub_remain_batch_size, 1,
                               f"scrub/min{epoch}", desc=f"scrub min {epoch}/{cfg.scrub_epochs}"):
            student, teacher = logits_pair(x)
            loss = cfg.scrub_gamma * F.cross_entropy(student, y) + cfg.scrub_alpha * distill_kl(student, teacher, T)
            min_losses.append(step(loss))
    return {"loss_max": torch.stack(max_losses).tolist() if max_losses else [],
            "loss_min": torch.stack(min_losses).tolist() if min_losses else []}


# SCRUB's release (meghdadk/SCRUB) sweeps sgda_learning_rate, msteps, sgda_epochs and alpha per
# scenario (lr 5e-4 to 5e-3 in its scripts); widened a decade down, kd_T around its 4.
SEARCH_SPACE: dict[str, Param] = {
    "scrub_lr": log_float(5e-5, 1e-2),
    "scrub_epochs": integer(1, 10),
    "scrub_msteps": integer(1, 5),
    "scrub_alpha": log_float(1e-4, 1.0),
    "scrub_gamma": uniform(0.1, 1.0),
    "scrub_kd_t": log_float(1.0, 8.0),
}
