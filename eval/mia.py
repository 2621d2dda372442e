"""The release's membership-inference attack: XGBoost on sorted softmax vectors.

The attacker learns to tell members (sample-set rows, trained on) from non-members (test
rows) by the shape of the model's confidence, then labels the forget set. The score is
its accuracy on D_f (as members) plus as many unseen test rows (as non-members); lower
means the forget set looks less like training data. Protocol: docs/method.md.
"""

from __future__ import annotations

import numpy as np
import torch

# XGBClassifier(n_estimators=100, objective="binary:logistic", booster="gbtree") with every
# other parameter at its default, through xgboost's native API (no scikit-learn needed)
XGB_PARAMS = {"objective": "binary:logistic", "booster": "gbtree"}
XGB_ROUNDS = 100


def sorted_softmax(logits: torch.Tensor) -> np.ndarray:
    """Softmax of each row sorted ascending (label-agnostic features), as float64 numpy."""
    return torch.softmax(logits.float(), dim=1).sort(dim=1).values.cpu().double().numpy()


def attack_accuracy(train_members: np.ndarray, train_nonmembers: np.ndarray, eval_members: np.ndarray,
                    eval_nonmembers: np.ndarray, fit_fraction: float = 0.99, seed: int = 0,
                    n_jobs: int | None = None) -> float:
    """Fit XGBoost on ``fit_fraction`` of the training rows; its accuracy on the eval rows."""
    import xgboost  # imported here: only this attack needs it

    x = np.concatenate([train_members, train_nonmembers])
    y = np.concatenate([np.ones(len(train_members)), np.zeros(len(train_nonmembers))])
    rows = np.random.default_rng(seed).permutation(len(x))[: max(2, int(round(fit_fraction * len(x))))]
    params = {**XGB_PARAMS, "seed": seed, **({"nthread": n_jobs} if n_jobs else {})}
    booster = xgboost.train(params, xgboost.DMatrix(x[rows], label=y[rows]), num_boost_round=XGB_ROUNDS)
    x_eval = np.concatenate([eval_members, eval_nonmembers])
    y_eval = np.concatenate([np.ones(len(eval_members)), np.zeros(len(eval_nonmembers))])
    predicted = booster.predict(xgboost.DMatrix(x_eval)) > 0.5
    return float((predicted == y_eval).mean())


def mia_rows(train_size: int, n_sample: int, n_test: int, n_forget: int) -> tuple[int, int]:
    """Rows the faithful MIA can use: members (and as many non-members) to fit on, and the
    unseen test rows that stand beside D_f as evaluation non-members. Below ``train_size``
    and ``n_forget`` only on sets smaller than the protocol assumes (slices)."""
    n = min(train_size, n_sample, n_test // 2)
    return n, min(n_forget, max(n_test - n, 0))


def faithful_mia(sample_logits: torch.Tensor, test_logits: torch.Tensor, forget_logits: torch.Tensor,
                 train_size: int = 4000, fit_fraction: float = 0.99, seed: int = 0,
                 n_jobs: int | None = None) -> float:
    """The release's protocol on logits already computed.

    ``sample_logits``: D_s in shuffled order (its first ``train_size`` rows are members);
    ``test_logits``: the test set in order (its first ``train_size`` rows are non-members,
    the next |D_f| the evaluation non-members); ``forget_logits``: all of D_f.
    """
    n, held_out = mia_rows(train_size, len(sample_logits), len(test_logits), len(forget_logits))
    if n < 1 or held_out < 1:  # no row to fit on, or none held out: no score to give
        return float("nan")
    if not all(bool(torch.isfinite(t).all()) for t in (sample_logits, test_logits, forget_logits)):
        return float("nan")  # a diverged model: NaN features all sort alike and scored as chance (0.5)
    test = sorted_softmax(test_logits)
    return attack_accuracy(sorted_softmax(sample_logits[:n]), test[:n], sorted_softmax(forget_logits),
                           test[n:n + len(forget_logits)], fit_fraction, seed, n_jobs)
