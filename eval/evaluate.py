"""The five accuracies and the MIA score of one unlearned model, from one pass per set."""

from __future__ import annotations

import sys

import torch
from torch import nn

from config import Config
from data.datasets import Dataset
from data.rng import generator
from data.splits import Split
from eval.accuracy import accuracy
from eval.mia import faithful_mia, mia_rows
from eval.mia_suite import mia_suite
from eval.predict import predict
from models.runtime import Runtime

METRICS = ("remain_acc", "forget_acc", "test_acc", "test_remain_acc", "test_forget_acc", "mia")


def train_augmented(cfg: Config, data: Dataset) -> bool:
    """Whether the training set is evaluated through the training augmentation (CIFAR, ``eval_train_augment``)."""
    return cfg.eval_train_augment and data.name.startswith("cifar")


def all_logits(model: nn.Module, data: Dataset, cfg: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits on the whole training set and the whole test set.

    D_r and D_f together are the training set, so one pass serves both (and the MIA's
    member rows, which come from D_s inside D_r). On CIFAR the training pass uses the
    training augmentation when ``eval_train_augment`` is on, as the release's loaders do.
    """
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    train_logits = predict(model, data, data.train.images, cfg.eval_batch_size,
                           train_transform=train_augmented(cfg, data), gen=generator(seed, "eval/augment"),
                           runtime=runtime)
    test_logits = predict(model, data, data.test.images, cfg.eval_batch_size, runtime=runtime)
    return train_logits, test_logits


def accuracies(train_logits: torch.Tensor, test_logits: torch.Tensor, data: Dataset, split: Split,
               forget_class: int) -> dict[str, float]:
    """Accuracies in percent on D_r, D_f, D_t, D_t,r and D_t,f.

    D_t,r / D_t,f split the test set by ``forget_class`` in both scenarios (for random
    removal they carry no meaning, as in the release).
    """
    device = train_logits.device
    train_y, test_y = data.train.labels, data.test.labels
    forget, remain = split.forget.to(device), split.remain.to(device)
    in_class = test_y == forget_class
    return {
        "remain_acc": accuracy(train_logits[remain], train_y[remain]),
        "forget_acc": accuracy(train_logits[forget], train_y[forget]),
        "test_acc": accuracy(test_logits, test_y),
        "test_remain_acc": accuracy(test_logits[~in_class], test_y[~in_class]),
        "test_forget_acc": accuracy(test_logits[in_class], test_y[in_class]),
    }


_said_rows: set[tuple[int, int, int, int]] = set()


def say_reduced_mia_rows(train_size: int, n_sample: int, n_test: int, n_forget: int) -> None:
    """One stderr line (once per set of sizes) when the faithful MIA fits or evaluates on fewer rows
    than the protocol's (``mia_train_size`` members and non-members; |D_f| unseen test rows)."""
    fit, held_out = mia_rows(train_size, n_sample, n_test, n_forget)
    key = (train_size, n_sample, n_test, n_forget)
    if (fit < train_size or held_out < n_forget) and key not in _said_rows:
        _said_rows.add(key)
        print(f"warning: faithful MIA on a small slice: fit on {fit} members and {fit} non-members "
              f"(mia_train_size {train_size}; D_s has {n_sample}, the test set {n_test}), evaluated on "
              f"{n_forget} forget rows and {held_out} unseen test rows", file=sys.stderr)


def mia_score(train_logits: torch.Tensor, test_logits: torch.Tensor, split: Split, cfg: Config, seed: int) -> float:
    """The faithful MIA: members drawn from D_s in a seeded shuffled order, as the release's loader."""
    say_reduced_mia_rows(cfg.mia_train_size, len(split.sample), len(test_logits), len(split.forget))
    order = torch.randperm(len(split.sample), generator=generator(seed, "mia/members"))
    members = split.sample[order].to(train_logits.device)
    forget = split.forget.to(train_logits.device)
    return faithful_mia(train_logits[members], test_logits, train_logits[forget], cfg.mia_train_size,
                        cfg.mia_fit_fraction, seed, n_jobs=torch.get_num_threads())


def evaluate(model: nn.Module, data: Dataset, split: Split, cfg: Config, seed: int) -> dict[str, float]:
    """Accuracies in percent on D_r, D_f, D_t, D_t,r, D_t,f, the faithful MIA score, and
    ``mia_<name>`` for every attack of ``cfg.mia_attacks`` (eval/mia_suite.py).

    The suite's attacks see the training set without augmentation, as SalUn's release evaluates
    MIA-efficacy (``Classification/main_forget.py`` in OPTML-Group/Unlearn-Saliency converts the
    retain, forget and test sets to the test transform before ``SVC_MIA``); the accuracies and the
    faithful MIA keep CaMU's release's augmented training-set pass (``eval_train_augment``). On
    CIFAR with augmentation that is one more pass over the training set.
    """
    train_logits, test_logits = all_logits(model, data, cfg, seed)
    suite_train = train_logits
    if cfg.mia_attacks and train_augmented(cfg, data):
        suite_train = predict(model, data, data.train.images, cfg.eval_batch_size,
                              runtime=Runtime.from_config(cfg, train_logits.device))
    suite = mia_suite(cfg.mia_attacks, model, data, split, cfg, seed, suite_train, test_logits)
    return {**accuracies(train_logits, test_logits, data, split, cfg.forget_class),
            "mia": mia_score(train_logits, test_logits, split, cfg, seed),
            **{f"mia_{name}": score for name, score in suite.items()}}
