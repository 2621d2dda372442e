"""More membership-inference attacks on one unlearned model, from logits already computed.

Every score lies in [0, 1], or is NaN (null in results.json) when the model's logits are not
all finite: a diverged method leaves no membership signal to measure. Row choices (all draws
seeded per ``seed`` through ``data.rng``):

- ``efficacy`` (SalUn's MIA-efficacy; higher = D_f looks less like training data): the release's
  RBF SVC (C=3) on the true-label confidence p_y, fit on min(|D_r|, |test|) random rows of D_r
  (members, 1) vs the whole test set (non-members, 0), as the release; the score is the
  share of D_f rows it predicts non-member. In class removal the release's test set has lost
  the forgotten class (its ``Classification/dataset.py``); here it keeps it (the committed
  cells were scored so; docs/baselines.md).
- ``loss`` / ``entropy`` (0.5 = D_f indistinguishable from unseen data; higher = more
  member-like): the test set is shuffled and halved; a logistic attacker on the per-sample
  cross-entropy / prediction entropy is fit on the first half (non-members) vs as many
  random D_r rows (members); the score is its balanced accuracy on D_f (members) vs the
  second, held-out half of the test set (non-members): (TPR on D_f + TNR on the held-out
  rows) / 2. Both attacks use the same rows. The 0.5 reading holds where D_f and the test
  rows share their classes (random removal; retrained model 0.50 on MNIST and Fashion-MNIST).
  In class removal D_f is one class and the test rows span all of them: a model that has
  forgotten the class gives D_f an unknown class's high loss and entropy, which the attacker
  calls non-member while it calls the known classes' test rows members, so the score falls
  far below 0.5 (retrained model, seeds 0-4: loss 0.06 / entropy 0.11 on MNIST, 0.10 / 0.35
  on Fashion-MNIST) and a model that forgot nothing sits near 0.5. There the two scores say
  how close D_f looks to the retrained model's view of it (read them against the retrain
  row, as the gaps do), not how far from unseen data; MIA-efficacy shares that reading
  (1.0 for the retrained model), as SalUn defines it.
- ``ulira`` (U-LiRA-lite, opt-in and expensive: ``ulira_shadows`` CNNs trained from scratch
  for ``ulira_epochs`` epochs each; small CNN only): n = min(|unique D_f|, |test|) random
  D_f rows and n random test rows are the targets. The shadows' pool is the whole training
  set plus those n test rows; every pool row is in exactly floor(S/2) of the S shadows'
  training sets (LiRA's balanced assignment). Per target, Gaussians of the logit-scaled
  confidence log(p_y / (1 - p_y)) are fit over the shadows that trained on it ("in") and
  those that did not ("out"), and the unlearned model's value is put through the
  likelihood-ratio test (member when it favours "in"). Score: the test's accuracy on the
  n D_f rows (members) and n test rows (non-members); 0.5 = D_f looks like unseen data.
  "Lite": the "in" shadows are trained on the target and not then unlearned, as the full
  U-LiRA (Hayes et al. 2024) would do with the method under test, and they train for
  fewer epochs than the original model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from config import Config, register_choices
from data.datasets import Dataset, ImageSet
from data.rng import generator, stream_seed
from data.splits import Split
from eval import attacks
from eval.predict import predict
from models import build_model
from models.runtime import Runtime
from models.train import train_classifier

ATTACKS: tuple[str, ...] = ("efficacy", "loss", "entropy", "ulira")
register_choices("mia_attacks", ATTACKS)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().double().numpy()


def _subsample(indices: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` rows of ``indices`` drawn without replacement (all of them, shuffled, when k >= len)."""
    return indices[torch.randperm(len(indices), generator=gen)[:k]]


def _rows(split: Split, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """The row choices shared by the threshold-style attacks (index arrays)."""
    remain = split.remain.cpu()
    g = generator(seed, "mia_suite/efficacy")
    efficacy_members = _subsample(remain, n_test, g)
    g = generator(seed, "mia_suite/halves")
    order = torch.randperm(n_test, generator=g)
    fit_test, held_test = order[: n_test // 2], order[n_test // 2:]
    fit_members = _subsample(remain, len(fit_test), g)
    return {"efficacy_members": efficacy_members.numpy(), "fit_test": fit_test.numpy(),
            "held_test": held_test.numpy(), "fit_members": fit_members.numpy(),
            "forget": split.forget.cpu().numpy()}


def _feature_attack(feature: np.ndarray, test_feature: np.ndarray, rows: dict[str, np.ndarray]) -> float:
    return attacks.attack_accuracy(feature[rows["fit_members"]], test_feature[rows["fit_test"]],
                                   feature[rows["forget"]], test_feature[rows["held_test"]])


@dataclass(frozen=True)
class Shadows:
    """What U-LiRA-lite's shadows give, independent of the model under attack."""

    forget: torch.Tensor  # training rows attacked as members
    test_rows: torch.Tensor  # test rows attacked as non-members
    values: np.ndarray  # S x targets: each shadow's logit confidence on each target
    keep: np.ndarray  # S x targets: whether the target was in that shadow's training half
    target_labels: np.ndarray


_last_shadows: dict[tuple, Shadows] = {}  # one entry: the unlearned and the retrained model of a seed share it


def shadow_confidences(data: Dataset, split: Split, cfg: Config, seed: int) -> Shadows:
    """Train ``cfg.ulira_shadows`` CNNs on random halves of D ∪ test targets (memoised for the last split)."""
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    forget_digest = hashlib.sha256(split.forget.cpu().numpy().tobytes()).hexdigest()
    memo = (id(data), data.name, len(data.train), forget_digest, seed, cfg.ulira_shadows, cfg.ulira_epochs,
            cfg.train_lr, cfg.weight_decay, cfg.batch_size, cfg.eval_batch_size, runtime)
    if memo in _last_shadows:
        return _last_shadows[memo]
    g = generator(seed, "mia_suite/ulira/targets")
    forget = torch.unique(split.forget.cpu())
    n = min(len(forget), len(data.test))
    forget = _subsample(forget, n, g)
    test_rows = _subsample(torch.arange(len(data.test)), n, g)
    n_train = len(data.train)
    pool = Dataset(data.name, ImageSet(torch.cat([data.train.images, data.test.images[test_rows.to(device)]]),
                                       torch.cat([data.train.labels, data.test.labels[test_rows.to(device)]])),
                   data.test, data.num_classes, data.transform)
    targets = torch.cat([forget, n_train + torch.arange(n)])
    shadows = cfg.ulira_shadows
    rank = torch.rand(shadows, len(pool.train), generator=g).argsort(dim=0).argsort(dim=0)
    keep = rank < shadows // 2  # S x pool: each row trains exactly floor(S/2) shadows
    target_labels = pool.train.labels[targets.to(device)].cpu().numpy()
    values = np.empty((shadows, len(targets)))
    for k in range(shadows):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(stream_seed(seed, f"mia_suite/ulira/init/{k}"))
            shadow = runtime.prepare(build_model(cfg.model_name, data.num_classes).to(device))
        train_classifier(shadow, pool, torch.nonzero(keep[k]).flatten(), cfg.ulira_epochs, cfg.train_lr,
                         cfg.weight_decay, cfg.batch_size, stream_seed(seed, f"mia_suite/ulira/order/{k}"),
                         desc=f"ulira shadow {k + 1}/{shadows}", runtime=runtime)
        logits = predict(shadow, pool, pool.train.images[targets.to(device)], cfg.eval_batch_size, runtime=runtime)
        values[k] = attacks.logit_confidence(_numpy(logits), target_labels)
    _last_shadows.clear()
    _last_shadows[memo] = Shadows(forget, test_rows, values, keep[:, targets].numpy(), target_labels)
    return _last_shadows[memo]


def ulira(data: Dataset, split: Split, cfg: Config, seed: int, train_logits: torch.Tensor,
          test_logits: torch.Tensor) -> float:
    """U-LiRA-lite (see the module docstring); the shadows are trained once per split and seed."""
    if cfg.model_name != "cnn":
        raise ValueError(f"ulira: only the small CNN (MNIST, Fashion-MNIST) is supported, not {cfg.model_name}")
    if cfg.ulira_shadows < 2:
        raise ValueError(f"ulira_shadows: {cfg.ulira_shadows} must be at least 2 (one 'in' and one 'out' each)")
    if cfg.ulira_epochs < 1:
        raise ValueError(f"ulira_epochs: {cfg.ulira_epochs} must be at least 1")
    sh = shadow_confidences(data, split, cfg, seed)
    target_logits = torch.cat([train_logits[sh.forget.to(train_logits.device)],
                               test_logits[sh.test_rows.to(test_logits.device)]])
    target = attacks.logit_confidence(_numpy(target_logits), sh.target_labels)
    n = len(sh.forget)
    is_member = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    return attacks.lira_accuracy(target, sh.values, sh.keep, is_member)


def mia_suite(names: list[str], model: nn.Module, data: Dataset, split: Split, cfg: Config, seed: int,
              train_logits: torch.Tensor, test_logits: torch.Tensor) -> dict[str, float]:
    """One score per name in ``names`` (see the module docstring for each definition).

    ``train_logits`` / ``test_logits``: the model's logits on the whole training / test set
    (``eval.evaluate.all_logits``). ``model`` is not read: every attack here works from those
    logits (``ulira`` trains its own shadows).
    """
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown MIA attack {unknown[0]!r}; known: {', '.join(ATTACKS)}")
    train_y, test_y = data.train.labels.cpu().numpy(), data.test.labels.cpu().numpy()
    train_z, test_z = _numpy(train_logits), _numpy(test_logits)
    if not (np.isfinite(train_z).all() and np.isfinite(test_z).all()):
        return {name: float("nan") for name in names}  # a diverged model: no membership signal to measure
    rows = _rows(split, len(test_y), seed)
    scores: dict[str, float] = {}
    for name in names:
        if name == "efficacy":
            confidence = attacks.true_confidence(train_z, train_y)
            scores[name] = attacks.efficacy(confidence[rows["efficacy_members"]],
                                            attacks.true_confidence(test_z, test_y), confidence[rows["forget"]])
        elif name == "loss":
            scores[name] = _feature_attack(attacks.cross_entropy(train_z, train_y),
                                           attacks.cross_entropy(test_z, test_y), rows)
        elif name == "entropy":
            scores[name] = _feature_attack(attacks.prediction_entropy(train_z), attacks.prediction_entropy(test_z),
                                           rows)
        else:
            scores[name] = ulira(data, split, cfg, seed, train_logits, test_logits)
    return scores
