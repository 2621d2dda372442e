"""The paper's relearning test: does the forgotten data come back when training goes on?

An unlearned model is fine-tuned on D_r alone for one epoch (Adam, lr 1e-3, 1e-4 on
CIFAR-100, the shared weight decay 1e-4 and batch 32), and Acc(D_r) - Acc(D_f) is
recorded before the first mini-batch and after every ``relearn_every`` of them. A model
that truly forgot keeps the gap where the retrained model keeps it; one that only hid
D_f (or learned to mis-map it) lets D_f accuracy climb back and the gap fall.
The fine-tuning works on a copy: the model passed in is left as it was.

Acc(D_f) is always over all of D_f. Acc(D_r) is over all of D_r on MNIST / Fashion-MNIST; on
CIFAR a pass over 45,000-50,000 images at 224 px every ``relearn_every`` steps costs more than
the fine-tuning itself, so by default it is taken on a fixed, seeded sample of 5,000 D_r rows
(the same rows at every record: the series stays comparable). ``relearn_eval_remain`` sets the
sample size (0: all of D_r); each series records the size it used as ``eval_remain``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from config import Config
from data.datasets import Dataset
from data.rng import generator
from data.splits import Split
from eval.accuracy import accuracy
from eval.predict import predict
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.gradient import cross_entropy
from unlearn.loop import batches

PAPER_LR = {"cifar100": 1e-4}  # every other dataset: 1e-3


def relearn_lr(cfg: Config) -> float:
    """``relearn_lr`` when set, else the paper's rate for the dataset."""
    return cfg.relearn_lr or PAPER_LR.get(cfg.dataset, 1e-3)


CIFAR_EVAL_REMAIN = 5000


def eval_remain_rows(cfg: Config, data: Dataset, split: Split, seed: int) -> torch.Tensor | None:
    """The D_r rows whose accuracy the series records (None: all of D_r, one pass over the training set)."""
    n = cfg.relearn_eval_remain
    if n < 0:
        n = CIFAR_EVAL_REMAIN if data.name.startswith("cifar") else 0
    if n == 0 or n >= len(split.remain):
        return None
    order = torch.randperm(len(split.remain), generator=generator(seed, "relearn/eval-remain"))
    return split.remain.cpu()[order[:n]]


def remain_forget_gap(model: nn.Module, data: Dataset, split: Split, cfg: Config, seed: int,
                      runtime: Runtime, remain_rows: torch.Tensor | None = None) -> float:
    """Acc(D_r) - Acc(D_f) in percentage points (D_r: ``remain_rows`` when given)."""
    augment = cfg.eval_train_augment and data.name.startswith("cifar")
    y = data.train.labels
    gen = generator(seed, "relearn/eval-augment")
    if remain_rows is None:  # one pass over the training set serves both
        logits = predict(model, data, data.train.images, cfg.eval_batch_size, train_transform=augment, gen=gen,
                         runtime=runtime)
        remain, forget = split.remain.to(y.device), split.forget.to(y.device)
        return accuracy(logits[remain], y[remain]) - accuracy(logits[forget], y[forget])
    rows = torch.cat([remain_rows, split.forget.cpu()]).to(y.device)
    logits = predict(model, data, data.train.images[rows], cfg.eval_batch_size, train_transform=augment, gen=gen,
                     runtime=runtime)
    n, labels = len(remain_rows), y[rows]
    return accuracy(logits[:n], labels[:n]) - accuracy(logits[n:], labels[n:])


def relearn(model: nn.Module, data: Dataset, split: Split, cfg: Config, seed: int) -> dict[str, Any]:
    """``{"step": [...], "gap": [...], "lr": lr}`` over one epoch of fine-tuning a copy on D_r."""
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    student = runtime.copy(model)  # compiled again when compile is on
    lr = relearn_lr(cfg)
    opt = runtime.adam(student.parameters(), lr, cfg.weight_decay)
    rows = eval_remain_rows(cfg, data, split, seed)
    steps, gaps = [0], [remain_forget_gap(student, data, split, cfg, seed, runtime, rows)]
    student.train()
    step = 0
    for _, x, y in batches(UnlearnTask(data, split, seed), split.remain, cfg.batch_size, 1, "relearn"):
        loss = cross_entropy(student, x, y, runtime)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.relearn_every == 0:
            steps.append(step)
            gaps.append(remain_forget_gap(student, data, split, cfg, seed, runtime, rows))
            student.train()
    if steps[-1] != step:  # the epoch's end, when it is not a multiple of relearn_every
        steps.append(step)
        gaps.append(remain_forget_gap(student, data, split, cfg, seed, runtime, rows))
    return {"step": steps, "gap": gaps, "lr": lr, "eval_remain": 0 if rows is None else len(rows)}


def mean_series(series: list[dict[str, Any]]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Steps shared by every seed's series, with the mean and population std of the gap there (NaN where a
    seed's gap is NaN, stored as null: a diverged model's accuracies)."""
    if not series:
        return [], torch.empty(0), torch.empty(0)
    common = sorted(set.intersection(*(set(s["step"]) for s in series)))
    by_step = [dict(zip(s["step"], s["gap"], strict=True)) for s in series]
    rows = torch.tensor([[math.nan if gap[k] is None else gap[k] for k in common] for gap in by_step],
                        dtype=torch.float64)
    return common, rows.mean(0), rows.std(0, correction=0)
