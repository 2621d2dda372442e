"""Bad teaching (TS): distil D_f from an incompetent teacher and part of D_r from the competent one.

Chundawat, Tarun, Mandal, Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in
Deep Networks Using an Incompetent Teacher", AAAI 2023, and the authors' release
(vikram2000b/bad-teaching-unlearning: ``unlearn.py``, ``blindspot_unlearner`` and
``UnlearnerLoss``; hyperparameters from ``CIFARSuper20_Rocket_Unlearn.ipynb``):

- student: the model; competent teacher: the original; incompetent teacher: a randomly
  initialised model of the same architecture (here ``models.build_model``, seeded from
  the ``bad_teacher/teacher`` stream of the task's seed), both teachers in eval mode;
- data: all of D_f (flag 1) and a uniform ``bad_teacher_retain_fraction`` of D_r
  (flag 0; release: 30%), mixed and shuffled, batch 256;
- loss per batch: KL(teacher || student) at temperature T (release: 1), the teacher's
  softmax(logits / T) taken from the incompetent teacher on D_f rows and from the
  competent one on D_r rows, against the student's log_softmax(logits / T); reduced as
  the release's ``F.kl_div`` default ('mean' over every element);
- Adam, lr 1e-4, no weight decay, 1 epoch.

The release's values come from CIFAR-100 (ResNet-18); it gives none for MNIST, so they are
the defaults for every dataset.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from config import Config
from data.batches import batch_indices, num_batches
from data.rng import generator, stream_seed
from models import build_model
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.search_space import Param, integer, log_float, uniform


def check(cfg: Config) -> None:
    if cfg.bad_teacher_epochs < 0:
        raise ValueError(f"bad_teacher_epochs: {cfg.bad_teacher_epochs} must be at least 0")
    if not cfg.bad_teacher_lr > 0:
        raise ValueError(f"bad_teacher_lr: {cfg.bad_teacher_lr} must be greater than 0")
    if not 0.0 <= cfg.bad_teacher_retain_fraction <= 1.0:
        raise ValueError(f"bad_teacher_retain_fraction: {cfg.bad_teacher_retain_fraction} must lie in [0, 1]")
    if not cfg.bad_teacher_temperature > 0:
        raise ValueError(f"bad_teacher_temperature: {cfg.bad_teacher_temperature} must be greater than 0")
    if cfg.bad_teacher_batch_size < 1:
        raise ValueError(f"bad_teacher_batch_size: {cfg.bad_teacher_batch_size} must be at least 1")


def incompetent_teacher(cfg: Config, num_classes: int, seed: int, device: torch.device | str) -> nn.Module:
    """A freshly initialised model of the original's architecture, from the task's seed, in eval mode.

    torch's global random stream is forked, so building it shifts no other draw.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # manual_seed reseeds CUDA too
        torch.manual_seed(stream_seed(seed, "bad_teacher/teacher"))
        teacher = build_model(cfg.model_name, num_classes)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def bad_teacher_loss(student_logits: torch.Tensor, competent_logits: torch.Tensor, incompetent_logits: torch.Tensor,
                     is_forget: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, mean over every element (``F.kl_div``'s 'mean').

    The teacher distribution is the incompetent teacher's on rows with ``is_forget`` and
    the competent teacher's elsewhere.
    """
    flag = is_forget.to(student_logits.dtype)[:, None]
    target = (flag * F.softmax(incompetent_logits / temperature, dim=1)
              + (1 - flag) * F.softmax(competent_logits / temperature, dim=1))
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, target, reduction="sum") / target.numel()


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Bad-teacher distillation on ``model`` in place; returns the per-step losses and the set sizes."""
    check(cfg)
    data, split = task.data, task.split
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    bad = runtime.prepare(incompetent_teacher(cfg, data.num_classes, task.seed, device))
    original.eval()
    remain = split.remain
    keep = int(cfg.bad_teacher_retain_fraction * len(remain))  # the release: int(0.3 * len(retain))
    subset = remain[torch.randperm(len(remain), generator=generator(task.seed, "bad_teacher/retain"))[:keep]]
    rows = torch.cat([split.forget, subset]).to(device)
    is_forget = torch.cat([torch.ones(len(split.forget), dtype=torch.bool), torch.zeros(keep, dtype=torch.bool)])
    is_forget = is_forget.to(device)
    opt = runtime.adam(model.parameters(), cfg.bad_teacher_lr, 0.0)
    model.train()
    order = generator(task.seed, "bad_teacher/order")
    augment = generator(task.seed, "bad_teacher/augment")
    steps = num_batches(len(rows), cfg.bad_teacher_batch_size)
    losses = []
    for epoch in range(cfg.bad_teacher_epochs):
        bar = tqdm(batch_indices(len(rows), cfg.bad_teacher_batch_size, True, order, device), total=steps,
                   desc=f"bad_teacher epoch {epoch + 1}/{cfg.bad_teacher_epochs}", leave=False)
        for pos in bar:
            x = data.inputs(data.train.images[rows[pos]], train=True, gen=augment)
            with torch.no_grad(), runtime.autocast(device):
                competent, _ = original(x)
                incompetent, _ = bad(x)
            with runtime.autocast(device):
                logits, _ = model(x)
            loss = bad_teacher_loss(logits.float(), competent.float(), incompetent.float(), is_forget[pos],
                                    cfg.bad_teacher_temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return {"loss": torch.stack(losses).tolist() if losses else [], "forget_rows": len(split.forget),
            "retain_rows": keep}


# Chundawat et al. (AAAI 2023) fix lr 1e-4, 1 epoch, 30 % of D_r and T=1 in the release
# notebook; no sweep. A decade around the lr, up to 5 epochs, 5 % to all of D_r, T 0.5 to 8.
SEARCH_SPACE: dict[str, Param] = {
    "bad_teacher_lr": log_float(1e-5, 1e-3),
    "bad_teacher_epochs": integer(1, 5),
    "bad_teacher_retain_fraction": uniform(0.05, 1.0),
    "bad_teacher_temperature": log_float(0.5, 8.0),
}
