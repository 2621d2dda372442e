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

SCRUB+R (``scrub_rewind``, default off): the paper's rewinding variant, as the release's
``MIA_experiments.ipynb`` ``scrub`` function does it (meghdadk/SCRUB@98ffb11). The student
is saved after every epoch; at the end the error on a held-out set drawn like D_f (the
release's ``forget_validation_loader``: validation rows whose label is one of D_f's
classes; here the test rows of those classes, since the project keeps no separate
validation split) is measured on the final student, and the saved student whose error on
D_f is closest to it is returned (ties: the earliest). Candidates are the students after
epochs 1..scrub_epochs: the release's list also holds the error before the first epoch, but
it keeps no checkpoint for it (its ``VGG_experiments.ipynb`` moves a choice of 0 to 1).
Errors are measured in eval mode without augmentation, as the release's ``validate``. The
held-out rows are evaluation data too: rewinding peeks at them, as in the release, so
SCRUB+R rows should say so.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from config import Config
from eval.accuracy import accuracy
from eval.predict import predict
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.loop import batches, make_optimizer
from unlearn.search_space import Param, choice, integer, log_float, uniform


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
    saved: list[dict[str, torch.Tensor]] = []  # SCRUB+R: the student after every epoch
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
        if cfg.scrub_rewind:
            saved.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    out: dict[str, Any] = {"loss_max": torch.stack(max_losses).tolist() if max_losses else [],
                           "loss_min": torch.stack(min_losses).tolist() if min_losses else []}
    if cfg.scrub_rewind and saved:
        out.update(rewind(model, saved, task, runtime))
    return out


def error(model: nn.Module, task: UnlearnTask, images: torch.Tensor, labels: torch.Tensor, runtime: Runtime) -> float:
    """Top-1 error (percent) of ``model`` on the given stored images, eval mode, no augmentation."""
    return 100.0 - accuracy(predict(model, task.data, images, runtime=runtime), labels)


def rewind(model: nn.Module, saved: list[dict[str, torch.Tensor]], task: UnlearnTask, runtime: Runtime
           ) -> dict[str, Any]:
    """SCRUB+R: load into ``model`` the saved epoch whose D_f error is closest to the final model's error on
    the held-out rows of D_f's classes; returns the errors and the chosen epoch (1-based)."""
    data, forget = task.data, task.split.forget.unique()
    classes = data.train.labels[forget].unique()
    held = torch.isin(data.test.labels, classes)
    if not held.any():  # no reference: keep the final student (the release's fallback)
        return {"rewind_epoch": len(saved), "rewind_heldout_error": float("nan"), "rewind_forget_error": []}
    reference = error(model, task, data.test.images[held], data.test.labels[held], runtime)
    forget_errors = []
    for state in saved:
        model.load_state_dict(state)
        forget_errors.append(error(model, task, data.train.images[forget], data.train.labels[forget], runtime))
    finite = [i for i in range(len(saved)) if math.isfinite(forget_errors[i] - reference)]
    # a diverged epoch's error is NaN and compares as nothing (``min`` kept epoch 1): only finite ones
    # are chosen from, and with none the final student (the last saved) stays
    chosen = min(finite, key=lambda i: abs(forget_errors[i] - reference)) if finite else len(saved) - 1
    model.load_state_dict(saved[chosen])
    return {"rewind_epoch": chosen + 1, "rewind_heldout_error": reference, "rewind_forget_error": forget_errors}


# SCRUB's release (meghdadk/SCRUB) sweeps sgda_learning_rate, msteps, sgda_epochs and alpha per
# scenario (lr 5e-4 to 5e-3 in its scripts); widened a decade down, kd_T around its 4. The forget
# batch is the release's own choice per notebook: 512 in large_scale_unlearning.ipynb, 64 in
# small_scale_unlearning.ipynb, 32 in .ipynb_checkpoints/scrubs_sensitivity-checkpoint.ipynb, 16 in
# MIA_experiments.ipynb (forget_bs). It sets how many max steps an epoch takes (D_f / batch): at 512,
# MNIST's class 0 gives 12, and the max loss's gradient is zero while the student still equals the
# teacher, so studies without it never forgot the class (D_f 99.8-100 % in every complete trial;
# results/tuning/superseded/). With it they still do not: more steps either leave the student put or
# run away to non-finite weights (docs/baselines.md, "SCRUB on MNIST class removal").
SEARCH_SPACE: dict[str, Param] = {
    "scrub_lr": log_float(5e-5, 1e-2),
    "scrub_epochs": integer(1, 10),
    "scrub_msteps": integer(1, 5),
    "scrub_alpha": log_float(1e-4, 1.0),
    "scrub_gamma": uniform(0.1, 1.0),
    "scrub_kd_t": log_float(1.0, 8.0),
    "scrub_forget_batch_size": choice(16, 32, 64, 128, 256, 512),
}
