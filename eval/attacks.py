"""Membership-inference attacks beside the release's XGBoost MIA: pure functions on numpy arrays.

Per-sample features (from logits and labels), the references' own attackers through
scikit-learn, and the scores built on them. ``eval.mia_suite`` decides which rows go where;
nothing here draws random numbers (both learners are deterministic for given rows).

Sources (facts only; no code is taken from them):
- MIA-efficacy: Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023,
  and Fan et al., "SalUn", ICLR 2024 (release: Unlearn-Sparse, ``evaluation/SVC_MIA.py`` and the
  ``SVC_MIA_forget_efficacy`` call in its ``main_forget.py``). The release fits an RBF SVC
  (C=3) per feature (correctness, confidence, entropy, modified entropy, probabilities) on
  |test| rows of D_r (members) vs the test set (non-members) and reports the share of D_f
  predicted non-member; SalUn's MIA-efficacy is its ``confidence`` feature, the true-label
  confidence, used here with the same learner, ``SVC(C=3, gamma="auto", kernel="rbf")``.
- Loss / entropy attacks: scikit-learn's ``LogisticRegression`` (defaults, on standardised
  features) on the cross-entropy loss or the prediction entropy ``-sum_c p_c log p_c`` (the
  release's ``entropy`` feature): the threshold attacks of the MIA literature.
- LiRA: Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022
  (logit-scaled confidence, Gaussian fits per sample, a global variance with few shadows);
  used for unlearning as U-LiRA by Hayes et al., "Inexact Unlearning Needs More Careful
  Evaluations to Avoid a False Sense of Privacy", 2024.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax, logsumexp

# --- per-sample features; logits: N x C, labels: N integers


def true_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax probability of the true label, p_y."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return np.exp(logp[np.arange(len(logp)), labels])


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy loss, -log p_y (computed from the logits, so never infinite)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return -logp[np.arange(len(logp)), labels]


def prediction_entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy of the softmax, -sum_c p_c log p_c (in nats; 0 log 0 counts as 0)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return -(np.exp(logp) * logp).sum(axis=1)


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence log(p_y / (1 - p_y)) = z_y - logsumexp_{c != y} z_c (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    others = z.copy()
    others[rows, labels] = -np.inf
    return z[rows, labels] - logsumexp(others, axis=1)


# --- the attackers (scikit-learn, as the references use them)


def _as_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def _fit(attacker: Any, members: np.ndarray, nonmembers: np.ndarray) -> Any:
    """Fit ``attacker`` on members (1) vs non-members (0); its ``predict`` is then 1 for "member"."""
    x = np.concatenate([_as_matrix(members), _as_matrix(nonmembers)])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    if len(x) == 0:
        raise ValueError("an attacker needs rows to fit on")
    return attacker.fit(x, y)


def svc_attacker() -> Any:
    """The Unlearn-Sparse / SalUn release's learner (``evaluation/SVC_MIA.py``)."""
    from sklearn.svm import SVC

    return SVC(C=3, gamma="auto", kernel="rbf")


def logistic_attacker() -> Any:
    """Logistic regression on standardised features: a learned threshold on one feature."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression())


# --- scores


def efficacy(members: np.ndarray, nonmembers: np.ndarray, forget: np.ndarray) -> float:
    """MIA-efficacy: fit members (1) vs non-members (0); the share of ``forget`` predicted non-member.

    In [0, 1]; higher means D_f looks less like training data (better forgetting).
    """
    attacker = _fit(svc_attacker(), members, nonmembers)
    return float(1.0 - attacker.predict(_as_matrix(forget)).mean())


def balanced_accuracy(predicted_member: np.ndarray, is_member: np.ndarray) -> float:
    """Mean of the true-positive rate on members and the true-negative rate on non-members."""
    predicted_member = np.asarray(predicted_member, dtype=bool)
    is_member = np.asarray(is_member, dtype=bool)
    if is_member.all() or not is_member.any():
        raise ValueError("balanced_accuracy needs both members and non-members")
    return float((predicted_member[is_member].mean() + (~predicted_member[~is_member]).mean()) / 2)


def attack_accuracy(fit_members: np.ndarray, fit_nonmembers: np.ndarray, eval_members: np.ndarray,
                    eval_nonmembers: np.ndarray) -> float:
    """Fit the attacker on one pair of sets; its balanced accuracy on another pair.

    0.5: the attacker cannot tell the evaluation members from the non-members.
    """
    attacker = _fit(logistic_attacker(), fit_members, fit_nonmembers)
    x = np.concatenate([_as_matrix(eval_members), _as_matrix(eval_nonmembers)])
    truth = np.concatenate([np.ones(len(eval_members), bool), np.zeros(len(eval_nonmembers), bool)])
    return balanced_accuracy(attacker.predict(x) > 0.5, truth)


def lira_scores(target: np.ndarray, shadow: np.ndarray, shadow_in: np.ndarray) -> np.ndarray:
    """Per-sample log likelihood ratio log N(v; mu_in, s_in) - log N(v; mu_out, s_out).

    ``target``: N values of the attacked model; ``shadow``: S x N values of the shadow
    models; ``shadow_in``: S x N, whether shadow s trained on sample i (every sample needs
    at least one "in" and one "out" shadow). Means are per sample; each variance is one
    number for all samples (LiRA's choice with few shadows): the pooled within-sample
    variance when some sample has two values on that side, else the variance of all values.
    """
    shadow = np.asarray(shadow, dtype=np.float64)
    shadow_in = np.asarray(shadow_in, dtype=bool)
    if shadow.shape != shadow_in.shape or shadow.shape[1] != len(target):
        raise ValueError(f"lira_scores: shapes {shadow.shape}, {shadow_in.shape} and {len(target)} targets")

    def side(mask: np.ndarray) -> tuple[np.ndarray, float]:
        count = mask.sum(axis=0)
        if (count == 0).any():
            raise ValueError("lira_scores: a sample has no shadow on one side (in / out)")
        mu = np.where(mask, shadow, 0.0).sum(axis=0) / count
        dof = int((count - 1).sum())
        if dof > 0:
            var = float((np.where(mask, shadow - mu, 0.0) ** 2).sum() / dof)
        else:
            var = float(shadow[mask].var())
        return mu, max(var, 1e-12)

    mu_in, var_in = side(shadow_in)
    mu_out, var_out = side(~shadow_in)
    v = np.asarray(target, dtype=np.float64)
    log_in = -0.5 * ((v - mu_in) ** 2 / var_in + np.log(var_in))
    log_out = -0.5 * ((v - mu_out) ** 2 / var_out + np.log(var_out))
    return log_in - log_out


def lira_accuracy(target: np.ndarray, shadow: np.ndarray, shadow_in: np.ndarray, is_member: np.ndarray) -> float:
    """Balanced accuracy of the likelihood-ratio test (member when the log ratio is > 0)."""
    return balanced_accuracy(lira_scores(target, shadow, shadow_in) > 0, is_member)
