"""Block A baselines (FT, NG, NG+, RL) on a small MNIST slice, and their own math by hand."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from baseline_helpers import forget_class_accuracy, params
from torch import nn

import main
from config import Config, validate
from data.splits import Split
from eval import accuracy, predict
from models.original import original_model, original_path
from unlearn import METHODS, UnlearnTask
from unlearn.gradient import StopRule, settings
from unlearn.neggrad_plus import neggrad_plus_loss, pull_toward

BLOCK_A = ("finetune", "neggrad", "neggrad_plus", "random_label")
# budgets for the slice (D_r cut to 640 rows, 20 batches): enough steps for each method to forget.
# FT forgets only by catastrophic forgetting, so it gets lr 0.05 (inside the 0.01-0.1 range of the
# Unlearn-Sparse release) and NG+ lr 1e-3 so that its ascent takes off within 40 steps.
# The release batches (FT and RL 256) leave too few steps on 640 rows: the slice runs them at 32. RL at its lr
# 0.01 wipes the small model on the first random-label pass and 20 D_r steps do not bring it back: 2e-3.
SMALL = {"finetune_epochs": 2, "finetune_lr": 0.05, "finetune_batch_size": 32, "neggrad_epochs": 2,
         "neggrad_plus_epochs": 2, "neggrad_plus_lr": 1e-3, "random_label_epochs": 2, "random_label_batch_size": 32,
         "random_label_lr": 2e-3}
REMAIN_ROWS = 640


@pytest.fixture(scope="module")
def setting(data_root, mnist_small, tmp_path_factory):
    """A class-0 split of the slice (D_r cut to 640 rows, for speed) and an original model trained
    on the whole slice (2 epochs), shared by the module."""
    torch.set_num_threads(2)
    cfg = validate(Config(data_root=str(data_root), download=False, train_limit=3000, test_limit=1000,
                          train_epochs=2, seeds=[0], out_dir=str(tmp_path_factory.mktemp("block_a")),
                          num_threads=2, device="cpu", **SMALL))
    original, _ = original_model(cfg, mnist_small)
    split = main.split_for_seed(cfg, mnist_small.train.labels, 0)
    keep = torch.randperm(len(split.remain), generator=torch.Generator().manual_seed(0))[:REMAIN_ROWS]
    split = Split(split.forget, split.remain[keep].sort().values, split.sample)
    return cfg, mnist_small, original, split


@pytest.mark.parametrize("name", BLOCK_A)
def test_method_runs_changes_the_copy_only_and_forgets(name, setting):
    cfg, data, original, split = setting
    before = params(original)
    model = copy.deepcopy(original)
    x = data.inputs(data.test.images[:5], train=False)
    shape = original(x)[0].shape

    torch.manual_seed(0)
    traces = METHODS[name](model, original, UnlearnTask(data, split, 0), cfg)

    assert isinstance(traces, dict) and traces
    for key, value in traces.items():  # traces are plain python values (JSON-ready), every loss finite
        if isinstance(value, list):
            assert value and all(isinstance(v, float) and math.isfinite(v) for v in value), key
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(params(model), params(original), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, params(original), strict=True))
    assert model(x)[0].shape == shape

    acc_original = forget_class_accuracy(original, data, split)
    acc_unlearned = forget_class_accuracy(model, data, split)
    assert acc_original > 90
    assert acc_unlearned < acc_original - 30, (name, acc_original, acc_unlearned)
    # the remaining classes keep most of their test accuracy (NG's early stop holds it too)
    test_r = torch.nonzero(data.test.labels != 0).flatten()
    assert accuracy(predict(model, data, data.test.images[test_r]), data.test.labels[test_r]) > 60


def test_same_seed_same_numbers(setting):
    """Each method draws only from its seeded streams: two runs give identical weights on the CPU."""
    cfg, data, original, split = setting
    for name in ("neggrad", "random_label"):
        a, b = copy.deepcopy(original), copy.deepcopy(original)
        METHODS[name](a, original, UnlearnTask(data, split, 3), cfg)
        METHODS[name](b, original, UnlearnTask(data, split, 3), cfg)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)), name


def test_neggrad_stop_rule(setting):
    cfg, data, original, split = setting
    task = UnlearnTask(data, split, 0)
    # checked after every batch, a stop at 100% fires on the first batch: nothing is updated
    model = copy.deepcopy(original)
    per_batch = dataclasses.replace(cfg, neggrad_stop_acc=100.0, neggrad_stop_every=1)
    traces = METHODS["neggrad"](model, original, task, per_batch)
    assert traces["stopped_at"] == 0 and traces["steps"] == 0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), original.parameters(), strict=True))
    # read every 4 batches (one host sync each), it fires at the end of the first window
    model = copy.deepcopy(original)
    traces = METHODS["neggrad"](model, original, task, dataclasses.replace(per_batch, neggrad_stop_every=4))
    assert traces["stopped_at"] == 3 and traces["steps"] == 3
    # a negative one runs the whole (here: short) budget, and plain ascent stays finite in it
    model = copy.deepcopy(original)
    short = dataclasses.replace(cfg, neggrad_stop_acc=-1.0, neggrad_epochs=1)
    traces = METHODS["neggrad"](model, original, task, short)
    assert traces["stopped_at"] is None
    assert traces["steps"] == math.ceil(len(split.forget) / cfg.batch_size)
    assert traces["finite"]
    assert traces["loss_forget"][-1] > traces["loss_forget"][0]  # ascent


def test_neggrad_plus_loss_by_hand():
    logits_r = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    logits_f = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    ce_r = (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3)) / 2  # rows: label 0 of [2,0,0], any of [0,0,0]
    ce_f = -math.log(math.e / (math.e + 2))
    loss, r, f = neggrad_plus_loss(logits_r, torch.tensor([0, 2]), logits_f, torch.tensor([1]), alpha=0.95)
    assert r.item() == pytest.approx(ce_r, rel=1e-12)
    assert f.item() == pytest.approx(ce_f, rel=1e-12)
    assert loss.item() == pytest.approx(0.95 * ce_r - 0.05 * ce_f, rel=1e-12)
    loss1, _, _ = neggrad_plus_loss(logits_r, torch.tensor([0, 2]), logits_f, torch.tensor([1]), alpha=1.0)
    assert loss1.item() == pytest.approx(ce_r, rel=1e-12)  # alpha 1: fine-tuning on D_r alone


def test_pull_toward_is_the_gradient_of_the_l2_term():
    torch.manual_seed(0)
    anchor = nn.Linear(3, 2)
    model = copy.deepcopy(anchor)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    pull_toward(model, anchor, 0.1)
    # by autograd: d/dtheta [0.1 / 2 * ||theta - theta0||^2] = 0.1 * (theta - theta0)
    for p, p0 in zip(model.parameters(), anchor.parameters(), strict=True):
        theta = p.detach().clone().requires_grad_(True)
        (0.05 * (theta - p0.detach()).pow(2).sum()).backward()
        torch.testing.assert_close(p.grad, 1 + theta.grad)
    assert all(p.grad is None for p in anchor.parameters())


@pytest.mark.parametrize("key, value, match", [
    ("finetune_epochs", -1, "finetune_epochs"),
    ("neggrad_lr", 0.0, "neggrad_lr"),
    ("random_label_optimizer", "rmsprop", "random_label_optimizer"),
    ("neggrad_plus_momentum", 1.0, "neggrad_plus_momentum"),
])
def test_settings_errors_name_the_key(key, value, match):
    cfg = dataclasses.replace(Config(), **{key: value})
    with pytest.raises(ValueError, match=match):
        settings(cfg, key.rsplit("_", 1)[0])


def test_bad_alpha_and_stop_are_refused(setting):
    cfg, data, original, split = setting
    task = UnlearnTask(data, split, 0)
    with pytest.raises(ValueError, match="neggrad_plus_alpha"):
        METHODS["neggrad_plus"](copy.deepcopy(original), original, task,
                                dataclasses.replace(cfg, neggrad_plus_alpha=1.5))
    with pytest.raises(ValueError, match="neggrad_plus_stop_acc"):
        METHODS["neggrad_plus"](copy.deepcopy(original), original, task,
                                dataclasses.replace(cfg, neggrad_plus_stop_acc=150.0))
    with pytest.raises(ValueError, match="neggrad_stop_acc"):
        METHODS["neggrad"](copy.deepcopy(original), original, task, dataclasses.replace(cfg, neggrad_stop_acc=101.0))


def test_random_label_is_the_salun_loop_without_a_mask(setting):
    """RL and SalUn share one loop and its random streams: SalUn at threshold 1.0 (every weight free) gives RL's
    weights exactly, and a real mask changes them, so RL vs SalUn isolates the saliency mask."""
    cfg, data, original, split = setting
    task = UnlearnTask(data, split, 0)
    same = dataclasses.replace(cfg, random_label_epochs=1, random_label_lr=2e-3, random_label_batch_size=64,
                               random_label_weight_decay=5e-4, random_label_momentum=0.9, salun_epochs=1,
                               salun_lr=2e-3, salun_batch_size=64, salun_weight_decay=5e-4, salun_momentum=0.9,
                               salun_threshold=1.0)
    rl, sal, masked = copy.deepcopy(original), copy.deepcopy(original), copy.deepcopy(original)
    traces = METHODS["random_label"](rl, original, task, same)
    METHODS["salun"](sal, original, task, same)
    METHODS["salun"](masked, original, task, dataclasses.replace(same, salun_threshold=0.5))
    assert all(torch.equal(p, q) for p, q in zip(rl.parameters(), sal.parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(rl.parameters(), masked.parameters(), strict=True))
    # the release's order: one D_f pass (random labels) then one D_r pass, each at the method's own batch
    assert len(traces["loss_forget"]) == math.ceil(len(split.forget) / 64)
    assert len(traces["loss_remain"]) == math.ceil(len(split.remain) / 64)


def test_stop_rule_running_mean_ignores_one_bad_batch():
    """Class removal's per-batch rule fires on one batch at the target; random removal's running mean needs the
    mean of the last k batches there. Both read the device only every ``every`` steps."""
    right, wrong = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 5.0]])
    y = torch.tensor([0])
    one_bad = [right] * 3 + [wrong] + [right] * 4  # 8 batches, mean 87.5 %
    per_batch, running = StopRule(0.0, 4), StopRule(50.0, 4, window=4)
    fired = [per_batch(b, y) for b in one_bad]
    assert fired == [False, False, False, True, False, False, False, False]  # at the end of the first window
    assert not any(running(b, y) for b in one_bad)
    # a run of wrong batches: the mean of the last 4 reaches 50 % at the second wrong batch (step 10), read at 12
    fired = [running(b, y) for b in [wrong] * 4]
    assert fired == [False, False, False, True]
    with pytest.raises(ValueError, match="window"):
        StopRule(0.0, 1, window=0)
    assert not any(StopRule(-1.0, 1, window=2)(wrong, y) for _ in range(4))  # negative: never


def test_neggrad_random_removal_stops_at_the_heldout_accuracy(setting):
    """In random removal the ascent stops once the running mean of the forget batches reaches the original's test
    accuracy (the retrained model's level on D_f), instead of ascending until nothing is left (the class rule)."""
    cfg, data, original, _ = setting
    cfg = dataclasses.replace(cfg, scenario="random", neggrad_epochs=5, neggrad_lr=1e-4, neggrad_stop_every=2,
                              neggrad_random_stop_window=4, bf16="false")
    split = main.split_for_seed(cfg, data.train.labels, 0)
    task = UnlearnTask(data, split, 0)
    test_acc = accuracy(predict(original, data, data.test.images), data.test.labels)
    model = copy.deepcopy(original)
    traces = METHODS["neggrad"](model, original, task, cfg)
    assert traces["stop_target"] == pytest.approx(test_acc)
    assert traces["stopped_at"] is not None and traces["stopped_at"] > 0
    assert (traces["stopped_at"] + 1) % cfg.neggrad_stop_every == 0  # read at the end of a window only
    kept = accuracy(predict(model, data, data.train.images[split.forget]), data.train.labels[split.forget])
    # the class rule (a batch at 0 %) lets the same ascent run on until D_f is gone
    gone = copy.deepcopy(original)
    METHODS["neggrad"](gone, original, task, dataclasses.replace(cfg, scenario="class"))
    lost = accuracy(predict(gone, data, data.train.images[split.forget]), data.train.labels[split.forget])
    assert kept > test_acc - 10 and lost < 30, (test_acc, kept, lost)


def test_method_batch_sizes_are_their_own_and_leave_the_original_alone(setting):
    """Every baseline's batch is its own key: changing it leaves the original's cache key (and file) as they are,
    while the original's batch_size is part of it; the methods' loops step at their own batch."""
    cfg, data, original, split = setting
    keys = ("finetune_batch_size", "neggrad_batch_size", "neggrad_plus_batch_size", "neggrad_plus_forget_batch_size",
            "random_label_batch_size", "boundary_shrink_batch_size", "boundary_expand_batch_size",
            "salun_batch_size", "scrub_forget_batch_size", "scrub_remain_batch_size", "ssd_batch_size",
            "bad_teacher_batch_size")
    base = original_path(cfg, "cpu")
    for key in keys:
        assert original_path(dataclasses.replace(cfg, **{key: 7}), "cpu") == base, key
    assert original_path(dataclasses.replace(cfg, batch_size=7), "cpu") != base
    # files that skipped the checksums train their own models (a checked run never reuses them)
    assert original_path(dataclasses.replace(cfg, verify_data=False), "cpu") != base
    unchecked = dataclasses.replace(cfg, verify_data=False, data_root="copy-a")  # two unchecked copies: two models
    assert original_path(unchecked, "cpu") != original_path(dataclasses.replace(unchecked, data_root="copy-b"), "cpu")
    assert original_path(dataclasses.replace(cfg, data_root="copy-a"), "cpu") == base  # checked files: one model
    task = UnlearnTask(data, split, 0)
    ft = METHODS["finetune"](copy.deepcopy(original), original, task,
                             dataclasses.replace(cfg, finetune_epochs=1, finetune_batch_size=100))
    assert len(ft["loss"]) == math.ceil(len(split.remain) / 100)
    ng = METHODS["neggrad"](copy.deepcopy(original), original, task,
                            dataclasses.replace(cfg, neggrad_epochs=1, neggrad_batch_size=50, neggrad_stop_acc=-1.0))
    assert ng["steps"] == math.ceil(len(split.forget) / 50)
    ngp = METHODS["neggrad_plus"](copy.deepcopy(original), original, task,
                                  dataclasses.replace(cfg, neggrad_plus_epochs=1, neggrad_plus_batch_size=100,
                                                      neggrad_plus_stop_acc=-1.0))
    assert ngp["steps"] == math.ceil(len(split.remain) / 100)
