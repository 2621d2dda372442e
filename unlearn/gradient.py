"""Pieces the plain gradient baselines share (FT, NG, NG+, RL): settings, optimiser, loss, batches.

Each of these methods is cross-entropy descent or ascent on some index set; what differs
is the set, the sign and the labels. The keys of a method are read by its prefix:
``<prefix>_epochs``, ``<prefix>_lr``, ``<prefix>_optimizer`` and ``<prefix>_momentum``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from config import Config
from data.batches import batch_indices
from data.rng import generator
from eval.accuracy import accuracy
from eval.predict import predict
from models.runtime import Runtime
from unlearn.base import UnlearnTask
from unlearn.loop import make_optimizer

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Settings:
    epochs: int
    lr: float
    optimizer: str
    momentum: float


def settings(cfg: Config, prefix: str) -> Settings:
    """The method's epochs, lr, optimiser and momentum, checked (ValueError names the key)."""
    s = Settings(getattr(cfg, f"{prefix}_epochs"), getattr(cfg, f"{prefix}_lr"),
                 getattr(cfg, f"{prefix}_optimizer"), getattr(cfg, f"{prefix}_momentum"))
    if s.epochs < 0:
        raise ValueError(f"{prefix}_epochs: {s.epochs} must be at least 0")
    if not s.lr > 0:
        raise ValueError(f"{prefix}_lr: {s.lr} must be greater than 0")
    if s.optimizer not in OPTIMIZERS:
        raise ValueError(f"{prefix}_optimizer: {s.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if not 0 <= s.momentum < 1:
        raise ValueError(f"{prefix}_momentum: {s.momentum} must lie in [0, 1)")
    return s


def optimizer(model: nn.Module, s: Settings, weight_decay: float, runtime: Runtime) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over all of ``model``'s parameters (momentum is SGD's only)."""
    return make_optimizer(model.parameters(), s.optimizer, s.lr, weight_decay, s.momentum,
                          fused=runtime.fused_adam)


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on (x, y); the forward pass under the runtime's autocast."""
    with runtime.autocast(x.device):
        logits, _ = model(x)
    return F.cross_entropy(logits.float(), y)


def endless_batches(task: UnlearnTask, indices: torch.Tensor, batch_size: int, purpose: str
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` over ``data.train[indices]`` without end, reshuffled on every pass.

    The partner stream of a loop over another set (``cycle`` of a loader), drawn lazily:
    no pass is ever held in memory.
    """
    data = task.data
    device = data.train.labels.device
    indices = indices.to(device)
    order = generator(task.seed, f"{purpose}/order")
    augment = generator(task.seed, f"{purpose}/augment")
    while True:
        for pos in batch_indices(len(indices), batch_size, True, order, device):
            idx = indices[pos]
            yield data.inputs(data.train.images[idx], train=True, gen=augment), data.train.labels[idx]


def check_stop_acc(value: float, key: str) -> float:
    """An early-stop accuracy in percent: at most 100; negative switches the stop off."""
    if value > 100:
        raise ValueError(f"{key}: {value} must be at most 100 (a percentage; negative: never stop)")
    return value


class StopRule:
    """The ascent's stop rule, on the accuracy (percent) of the forget batches the ascent sees.

    ``window`` 1 (class removal): stop once a single forget batch's accuracy is at most
    ``stop_acc`` (with ``stop_acc`` 0: the first batch the model gets entirely wrong).
    ``window`` k > 1 (random removal): stop once the running mean over the last k batches is
    at most ``stop_acc``; one batch is too noisy an estimate when the target is near the
    retrained model's ~99 % on D_f.

    The batch accuracies stay on the device and are read every ``every`` batches, in one host
    sync (a per-step ``.item()`` would stall a GPU every step): at each read the rule is
    evaluated at every step of the window just ended (each running mean over the k batches up
    to that step), and fires at the end of the window in which it first held, so up to
    ``every - 1`` more steps run than with a check after every batch (``every=1``: checked
    before every step). Never fires, and never syncs, when ``stop_acc`` is negative.
    """

    def __init__(self, stop_acc: float, every: int, window: int = 1) -> None:
        if every < 1:
            raise ValueError(f"stop check interval: {every} must be at least 1")
        if window < 1:
            raise ValueError(f"stop window: {window} must be at least 1")
        self.stop_acc, self.every, self.window = stop_acc, every, window
        self.recent: list[torch.Tensor] = []  # the last window + every - 1 batch accuracies
        self.pending = 0  # batches since the last read

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> bool:
        if self.stop_acc < 0:
            return False
        self.recent.append((logits.argmax(1) == y).float().mean())
        del self.recent[:-(self.window + self.every - 1)]
        self.pending += 1
        if self.pending < self.every:
            return False
        self.pending = 0
        acc = torch.stack(self.recent)
        if len(acc) < self.window:  # no full window yet
            return False
        means = acc.unfold(0, self.window, 1).mean(1)[-self.every:]  # running means ending at the new steps
        return 100.0 * means.min().item() <= self.stop_acc


def heldout_accuracy(original: nn.Module, task: UnlearnTask, runtime: Runtime) -> float:
    """The original's accuracy (percent) on the test set: a held-out estimate of what a model that never
    saw D_f (the retrained one) scores on D_f in random removal."""
    data = task.data
    with torch.no_grad():
        logits = predict(original, data, data.test.images, runtime=runtime)
    return accuracy(logits, data.test.labels)


def stop_rule(cfg: Config, prefix: str, original: nn.Module, task: UnlearnTask, runtime: Runtime
              ) -> tuple[StopRule, float]:
    """The ascent's stop rule for ``cfg.scenario`` and its target in percent.

    Class removal: a single forget batch at most ``<prefix>_stop_acc`` (0: a batch entirely
    wrong, as the retrained model is on a removed class). Random removal: the running mean of
    the last ``<prefix>_random_stop_window`` forget batches at most
    ``<prefix>_random_stop_acc``, where 0 stands for the original's test accuracy (the
    retrained model keeps about that on D_f). Negative targets switch the stop off.
    """
    every = getattr(cfg, f"{prefix}_stop_every")
    if cfg.scenario == "class":
        key = f"{prefix}_stop_acc"
        target = check_stop_acc(getattr(cfg, key), key)
        return StopRule(target, every), target
    key = f"{prefix}_random_stop_acc"
    target = check_stop_acc(getattr(cfg, key), key)
    if target == 0:
        target = heldout_accuracy(original, task, runtime)
    return StopRule(target, every, getattr(cfg, f"{prefix}_random_stop_window")), target


def as_floats(losses: list[torch.Tensor]) -> list[float]:
    """Detached per-step losses as python floats, in one device sync."""
    return torch.stack(losses).tolist() if losses else []
