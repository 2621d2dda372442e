"""The concept method's own measures, beside the accuracies every method reports.

- ``forgetting_rate`` (Fr): the paper's membership test, as ``fit_fr_attack`` /
  ``apply_fr`` of the release's ``revision/mia.py``: a linear SVM on standardised softmax
  outputs of the *original* model learns forget-class training rows (members) against
  forget-class test rows (non-members), balanced by a seeded subsample; applied to the
  unlearned model's outputs on the members, Fr is the share it calls non-members (0-1).
  ``fr_attack_accuracy`` says whether the attack has anything to transfer: its accuracy on
  its own balanced training rows (0.5: the original does not tell members from non-members).
- ``donor_absorption``: % of forget-class test rows the unlearned model assigns to the
  donor class (where the forgotten class went).
- ``shared_concept_retention``: % accuracy on other classes' test rows that express the
  forget class's top concepts most strongly (above a quantile of the mean margin): the
  over-unlearning check, since those rows share the evidence the method poisoned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from concepts.bank import ConceptBank
from data.datasets import Dataset
from data.rng import generator
from eval.accuracy import accuracy
from eval.predict import predict


def probabilities(model: nn.Module, data: Dataset, images: torch.Tensor) -> torch.Tensor:
    """Softmax outputs (N x classes, CPU float64), the attack's features, from ``predict``'s logits."""
    return torch.softmax(predict(model, data, images, batch_size=512), 1).double().cpu()


def fr_attack(original: nn.Module, data: Dataset, forget_class: int, seed: int) -> tuple[Any, float]:
    """The transferred attack (scaler + linear SVC on the original's softmax) and its accuracy on its own
    balanced training rows: near 0.5 means the original treats forget-class train and test rows alike,
    and then no Fr value says anything (the case on MNIST, whose original does not overfit class 0)."""
    from sklearn.pipeline import make_pipeline  # imported on use: scikit-learn takes seconds to import
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    member = data.train.images[data.train.labels == forget_class]
    nonmember = data.test.images[data.test.labels == forget_class]
    n = min(len(member), len(nonmember))
    if n < 2:
        return None, float("nan")
    g = generator(seed, "concept_metrics/fr")
    m_idx = torch.randperm(len(member), generator=g)[:n].to(member.device)
    t_idx = torch.randperm(len(nonmember), generator=g)[:n].to(nonmember.device)
    x = torch.cat([probabilities(original, data, member[m_idx]),
                   probabilities(original, data, nonmember[t_idx])]).numpy()
    y = np.concatenate([np.ones(n), np.zeros(n)])
    attack = make_pipeline(StandardScaler(), SVC(kernel="linear")).fit(x, y)
    return attack, float(attack.score(x, y))


def forgetting_rate(original: nn.Module, model: nn.Module, data: Dataset, forget_class: int, seed: int,
                    attack: Any = None) -> float:
    """Fr: share of forget-class training rows the transferred attack calls non-members."""
    if attack is None:
        attack, _ = fr_attack(original, data, forget_class, seed)
    if attack is None:
        return float("nan")
    member = probabilities(model, data, data.train.images[data.train.labels == forget_class])
    if not bool(torch.isfinite(member).all()):
        return float("nan")  # a diverged model: the attack's scaler refuses NaN features
    return float((attack.predict(member.numpy()) == 0).mean())


def donor_absorption(model: nn.Module, data: Dataset, forget_class: int, donor: int) -> float:
    """% of forget-class test rows predicted as the donor."""
    rows = data.test.images[data.test.labels == forget_class]
    logits = predict(model, data, rows, batch_size=512)
    return accuracy(logits, torch.full((len(rows),), donor, device=logits.device))


def shared_concept_retention(model: nn.Module, data: Dataset, bank: ConceptBank, concepts: list[int],
                             forget_class: int, quantile: float) -> float:
    """% accuracy on other-class test rows whose mean margin on ``concepts`` is above its ``quantile``."""
    other = data.test.labels != forget_class
    images, labels = data.test.images[other], data.test.labels[other].cpu()
    expression = bank.scores(images)[:, concepts].mean(1)
    strong = expression >= torch.quantile(expression.double(), quantile).float()
    if not bool(strong.any()):
        return float("nan")
    picked = strong.nonzero().squeeze(1).to(images.device)
    return accuracy(predict(model, data, images[picked], batch_size=512).cpu(), labels[strong])
