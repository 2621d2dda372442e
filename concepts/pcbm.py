"""The post-hoc concept bottleneck head: a sparse linear classifier from concept margins to classes.

PCBM (Yuksekgonul et al., ICLR 2023; ``train_pcbm.py`` of mertyg/post-hoc-cbm, which the
concept method's release runs unchanged) fits scikit-learn's
``SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=1e-5, l1_ratio=0.99,
max_iter=10000)`` on the margins of the training images. The strong L1 share makes
each class depend on few concepts, which is what lets step 3 read a class's defining
concepts off its weight row. With the 17 concepts of the ``cav`` bank, 1e-5 zeroes only 1-5 %
of the weights (a class's five largest still carry ~60 % of its weight mass); the key
``concept_pcbm_lam`` raises it (docs/concepts.md). The fitted head is returned as a ``torch.nn.Linear`` so
attribution (captum) runs on it like on any module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ALPHA = 1e-5  # PCBM's --lam (key concept_pcbm_lam)
L1_RATIO = 0.99  # PCBM's --alpha


@dataclass
class PCBMHead:
    """The head (classes x concepts), with its accuracy on held-out margins and its sparsity."""

    linear: torch.nn.Linear
    accuracy: float  # % on the held-out margins
    sparsity: float  # share of exactly-zero weights
    top5_share: float  # mean share of a class's |weight| mass on its 5 largest concepts

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight.detach()


def fit_pcbm(margins: np.ndarray, labels: np.ndarray, held_margins: np.ndarray, held_labels: np.ndarray,
             num_classes: int, seed: int, lam: float = ALPHA) -> PCBMHead:
    """Fit the elastic-net logistic head on ``margins`` (N x K) and score it on the held-out rows."""
    from sklearn.linear_model import SGDClassifier  # imported on use: scikit-learn takes seconds to import

    clf = SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=lam, l1_ratio=L1_RATIO, max_iter=10000,
                        random_state=seed)
    clf.fit(margins, labels)
    coef = np.zeros((num_classes, margins.shape[1]))
    bias = np.zeros(num_classes)
    rows = clf.classes_.astype(int)  # a class absent from the fitting rows keeps a zero row
    if num_classes == 2 and coef.shape[0] == 2 and clf.coef_.shape[0] == 1:  # scikit-learn's binary form
        coef[1], bias[1] = clf.coef_[0], clf.intercept_[0]
    else:
        coef[rows], bias[rows] = clf.coef_, clf.intercept_
    linear = torch.nn.Linear(margins.shape[1], num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef))
        linear.bias.copy_(torch.from_numpy(bias))
    linear.requires_grad_(False)
    accuracy = 100.0 * float((clf.predict(held_margins) == held_labels).mean()) if len(held_labels) else float("nan")
    mass = np.abs(coef)
    top5 = np.sort(mass, axis=1)[:, -5:].sum(1) / np.maximum(mass.sum(1), 1e-12)
    return PCBMHead(linear, accuracy, float((coef == 0).mean()), float(top5.mean()))
