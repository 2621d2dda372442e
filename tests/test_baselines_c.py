"""Block C baselines (SCRUB, SalUn, SSD) on a small MNIST slice, and their own math on hand-made cases."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from config import Config, validate
from eval import accuracy, predict
from main import split_for_seed
from models.original import original_model
from models.runtime import Runtime
from unlearn import METHODS, SEARCH_SPACES, UnlearnTask
from unlearn.salun import saliency_mask, top_fraction_mask
from unlearn.scrub import distill_kl, learning_rate, rewind
from unlearn.ssd import batch_importances, dampen, mean_importance


@pytest.fixture(scope="module")
def setup(data_root, mnist_small, tmp_path_factory):
    """A config over the 3000-sample slice, its original model (trained once for the module) and the class split."""
    torch.set_num_threads(2)
    cfg = validate(Config(data_root=str(data_root), download=False, train_limit=3000, test_limit=1000,
                          train_epochs=2, seeds=[0], out_dir=str(tmp_path_factory.mktemp("block_c")),
                          num_threads=2, device="cpu"))
    original, _ = original_model(cfg, mnist_small)
    split = split_for_seed(cfg, mnist_small.train.labels, 0)
    return cfg, original, split


def forget_class_accuracy(model, data, cfg) -> float:
    """Test accuracy on the forgotten class."""
    logits = predict(model, data, data.test.images)
    is_forget = data.test.labels == cfg.forget_class
    return accuracy(logits[is_forget], data.test.labels[is_forget])


def run_method(name: str, cfg: Config, data, original, split):
    """Run a method through the registry and check what every method must do; returns (model, traces)."""
    model = copy.deepcopy(original)
    frozen = [p.detach().clone() for p in original.parameters()]
    traces = METHODS[name](model, original, UnlearnTask(data, split, 0), cfg)
    assert isinstance(traces, dict)
    assert all(torch.equal(a, b) for a, b in zip(frozen, original.parameters(), strict=True)), "original changed"
    assert any(not torch.equal(a, b) for a, b in zip(frozen, model.parameters(), strict=True)), "model unchanged"
    with torch.no_grad():
        logits, _ = model.eval()(data.test.images[:7])
    assert logits.shape == (7, data.num_classes)
    assert torch.isfinite(logits).all()
    return model, traces


def test_scrub_runs_and_forgets(setup, mnist_small):
    cfg, original, split = setup
    # On MNIST's D_f (5923 rows at batch 512) the release's settings take 24 max steps; on this 300-row slice a
    # forget batch of 16 gives a comparable count. The max phase starts where its gradient vanishes (student =
    # teacher) and then grows exponentially, so its outcome is sensitive to rounding: float32 keeps it repeatable.
    cfg = dataclasses.replace(cfg, scrub_forget_batch_size=16, bf16="false")
    model, traces = run_method("scrub", cfg, mnist_small, original, split)
    assert len(traces["loss_max"]) == cfg.scrub_msteps * math.ceil(len(split.forget) / 16)
    assert len(traces["loss_min"]) == cfg.scrub_epochs * math.ceil(len(split.remain) / cfg.scrub_remain_batch_size)
    assert all(v <= 1e-4 for v in traces["loss_max"])  # -KL (up to rounding)
    before = forget_class_accuracy(original, mnist_small, cfg)
    after = forget_class_accuracy(model, mnist_small, cfg)
    assert after < before - 30, (before, after)


def test_salun_runs_forgets_and_freezes_unsalient_weights(setup, mnist_small):
    cfg, original, split = setup
    cfg = dataclasses.replace(cfg, salun_epochs=2)
    model, traces = run_method("salun", cfg, mnist_small, original, split)
    weights = sum(p.numel() for p in original.parameters())
    assert traces["weights"] == weights
    assert traces["mask_weights"] == int(weights * cfg.salun_threshold)
    # every weight outside the saliency mask keeps its original value exactly
    task = UnlearnTask(mnist_small, split, 0)
    mask = saliency_mask(copy.deepcopy(original), task, cfg, Runtime.from_config(cfg, "cpu"))
    for m, p0, p1 in zip(mask, original.parameters(), model.parameters(), strict=True):
        assert torch.equal(p0[m == 0], p1[m == 0])
    before = forget_class_accuracy(original, mnist_small, cfg)
    after = forget_class_accuracy(model, mnist_small, cfg)
    assert after < before - 30, (before, after)


def test_ssd_runs_and_forgets(setup, mnist_small):
    cfg, original, split = setup
    # D_f is a tenth of the data here, so []_f / []_D cannot exceed about 10 and the release's alpha = 10
    # selects only weights that D_r does not use; a smaller alpha exercises the dampening itself
    cfg = dataclasses.replace(cfg, ssd_alpha=1.0)
    model, traces = run_method("ssd", cfg, mnist_small, original, split)
    assert 0 < traces["selected_weights"] < traces["weights"]
    assert traces["full_samples"] == len(mnist_small.train)
    before = forget_class_accuracy(original, mnist_small, cfg)
    after = forget_class_accuracy(model, mnist_small, cfg)
    assert after < before - 30, (before, after)


# --- method-specific math on hand-made cases


def test_distill_kl_by_hand():
    s = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    # row 0: p_t = (3/4, 1/4), p_s = (1/2, 1/2); row 1: identical distributions
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert distill_kl(s, t, 1.0).item() == pytest.approx(kl0 / 2, rel=1e-5)
    # temperature 2: both logit rows halved, the sum scaled by T^2 = 4
    p_t = torch.softmax(t[0] / 2, 0)
    kl0_t2 = float((p_t * (p_t.log() - math.log(0.5))).sum())
    assert distill_kl(s, t, 2.0).item() == pytest.approx(4 * kl0_t2 / 2, rel=1e-5)
    assert distill_kl(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-5)


def test_scrub_learning_rate_schedule():
    cfg = Config(scrub_lr=1.0, scrub_lr_decay_epochs=[3, 5, 9], scrub_lr_decay_rate=0.1)
    rates = [learning_rate(e, cfg) for e in range(1, 11)]
    assert rates == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001])


def test_top_fraction_mask_by_hand():
    scores = [torch.tensor([0.1, 5.0]), torch.tensor([[3.0, 0.2], [4.0, 1.0]])]
    half = top_fraction_mask(scores, 0.5)  # 6 weights: the 3 largest scores (5, 4, 3) are freed
    assert torch.equal(half[0], torch.tensor([0.0, 1.0]))
    assert torch.equal(half[1], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert all(torch.equal(m, torch.ones_like(s)) for m, s in zip(top_fraction_mask(scores, 1.0), scores, strict=True))
    assert sum(int(m.sum()) for m in top_fraction_mask(scores, 0.4)) == 2  # int(6 * 0.4)


def test_ssd_dampen_by_hand():
    p = [torch.ones(4), torch.full((2,), 2.0)]
    full = [torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.tensor([0.5, 2.0])]
    forget = [torch.tensor([5.0, 20.0, 0.5, 0.0]), torch.tensor([10.0, 10.0])]
    n = dampen(p, full, forget, alpha=10.0, lam=1.0)
    # selected: 20 > 10 * 1 and 10 > 10 * 0.5; factors 1/20 and 0.5/10
    assert n == 2
    assert torch.allclose(p[0], torch.tensor([1.0, 0.05, 1.0, 1.0]))
    assert torch.allclose(p[1], torch.tensor([2.0 * 0.05, 2.0]))
    q = [torch.ones(1)]
    assert dampen(q, [torch.tensor([1.0])], [torch.tensor([20.0])], alpha=10.0, lam=30.0) == 1
    assert torch.equal(q[0], torch.ones(1))  # factor min(30 / 20, 1) = 1: never grows a weight


def test_ssd_importance_is_mean_squared_batch_gradient(setup, mnist_small):
    cfg, original, _ = setup
    model = copy.deepcopy(original)
    task = UnlearnTask(mnist_small, split_for_seed(cfg, mnist_small.train.labels, 0), 0)
    first, second = torch.arange(0, 8), torch.arange(8, 13)
    sums, count = batch_importances(model, task, torch.cat([first, second]), 4, "t")
    assert count == 4
    manual = [torch.zeros_like(p) for p in model.parameters()]
    model.eval()
    for start in range(0, 13, 4):
        idx = torch.arange(start, min(start + 4, 13))
        loss = torch.nn.functional.cross_entropy(model(mnist_small.train.images[idx])[0], mnist_small.train.labels[idx])
        for acc, g in zip(manual, torch.autograd.grad(loss, list(model.parameters())), strict=True):
            acc += g * g
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-12) for a, b in zip(sums, manual, strict=True))
    # two passes whose batch boundaries line up combine into the single pass's mean
    s1, c1 = batch_importances(model, task, first, 4, "t")
    s2, c2 = batch_importances(model, task, second, 4, "t")
    combined = mean_importance([s1, s2], [c1, c2])
    assert all(torch.allclose(a, b / count, rtol=1e-5, atol=1e-12) for a, b in zip(combined, sums, strict=True))


def test_ssd_ratio_is_capped_so_its_space_stays_below_one(setup, mnist_small):
    """[]_f / []_D cannot exceed (all batches) / (forget batches), about 10 with a tenth forgotten: the release's
    alpha 10 sits at the cap, so the declared space is alpha <= 1 (the default left outside), lambda 0.01-1."""
    cfg, original, split = setup
    task = UnlearnTask(mnist_small, split, 0)
    model = copy.deepcopy(original)
    f_sum, f_n = batch_importances(model, task, split.forget, 64, "t/f")
    r_sum, r_n = batch_importances(model, task, split.remain, 64, "t/r")
    forget, full = mean_importance([f_sum], [f_n]), mean_importance([r_sum, f_sum], [r_n, f_n])
    cap = (r_n + f_n) / f_n
    ratio = max((f / d.clamp_min(1e-30))[d > 0].max().item() for f, d in zip(forget, full, strict=True))
    assert 5 < cap < 15 and ratio <= cap * (1 + 1e-4), (ratio, cap)
    space = SEARCH_SPACES["ssd"]
    assert space["ssd_alpha"].high <= 1.0 and space["ssd_alpha"].log
    assert (space["ssd_lambda"].low, space["ssd_lambda"].high) == (0.01, 1.0)
    assert not space["ssd_alpha"].contains(Config().ssd_alpha) and space["ssd_lambda"].contains(Config().ssd_lambda)


def test_scrub_rewind_keeps_the_final_student_when_the_saved_ones_diverged(setup, mnist_small):
    """NaN errors compare as nothing: ``min`` kept the first epoch, a diverged one, without saying why."""
    cfg, original, split = setup
    model = copy.deepcopy(original)
    final = copy.deepcopy(model.state_dict())
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in final.items()}
    task, runtime = UnlearnTask(mnist_small, split, 0), Runtime.from_config(cfg, "cpu")
    out = rewind(model, [nan, final], task, runtime)
    assert out["rewind_epoch"] == 2 and math.isnan(out["rewind_forget_error"][0])
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
    out = rewind(model, [nan, nan], task, runtime)  # every epoch diverged: the last stays
    assert out["rewind_epoch"] == 2 and all(math.isnan(e) for e in out["rewind_forget_error"])


def test_scrub_rewind_returns_the_epoch_closest_to_the_heldout_error(setup, mnist_small):
    """SCRUB+R: the students after each epoch are kept and the one whose D_f error is closest to the final
    student's error on held-out test rows of D_f's classes is returned: the same weights as SCRUB stopped there."""
    cfg, original, split = setup
    cfg = dataclasses.replace(cfg, scrub_forget_batch_size=16, scrub_epochs=3, scrub_msteps=2, bf16="false")
    assert not Config().scrub_rewind
    rewound, traces = run_method("scrub", dataclasses.replace(cfg, scrub_rewind=True), mnist_small, original, split)
    errors, reference = traces["rewind_forget_error"], traces["rewind_heldout_error"]
    assert len(errors) == 3 and 1 <= traces["rewind_epoch"] <= 3
    assert traces["rewind_epoch"] - 1 == min(range(3), key=lambda i: abs(errors[i] - reference))
    held = mnist_small.test.labels == cfg.forget_class  # class removal: the test rows of the removed class
    final, _ = run_method("scrub", cfg, mnist_small, original, split)
    assert reference == pytest.approx(100 - forget_class_accuracy(final, mnist_small, cfg))
    assert held.any()
    stopped, _ = run_method("scrub", dataclasses.replace(cfg, scrub_epochs=traces["rewind_epoch"]), mnist_small,
                            original, split)
    assert all(torch.equal(p, q) for p, q in zip(rewound.parameters(), stopped.parameters(), strict=True))
