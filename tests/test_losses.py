"""CaMU's losses against a hand computation, one CaMU step, and ``forward_pair``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from config import Config
from models import CNN
from unlearn.base import forward_pair, has_batch_statistics
from unlearn.camu import camu_step, embedding_kl, output_loss, representation_loss

ORIG_S = [[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]]
EMB_S = [[1.0, 0.0, -1.0], [0.2, 0.2, 0.9]]
ORIG_CF = [[3.0, 1.0, 0.0], [-2.0, 0.5, 0.5]]
EMB_F = [[0.0, 0.0, 0.0], [1.5, -0.5, 2.5]]


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def hand_kl(target, emb):
    """sum over rows and dimensions of p * (log p - log q), p = softmax(target), q = softmax(emb)."""
    total = 0.0
    for t_row, e_row in zip(target, emb, strict=True):
        p, q = softmax(t_row), softmax(e_row)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    return total


def hand_ce(logits, labels):
    """Mean over rows of -log softmax(row)[label]."""
    return sum(-math.log(softmax(row)[y]) for row, y in zip(logits, labels, strict=True)) / len(labels)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_embedding_kl_by_hand():
    assert embedding_kl(t(ORIG_S), t(EMB_S)).item() == pytest.approx(hand_kl(ORIG_S, EMB_S), rel=1e-10)
    assert embedding_kl(t(ORIG_CF), t(EMB_F)).item() == pytest.approx(hand_kl(ORIG_CF, EMB_F), rel=1e-10)
    # direction: the original model's distribution is p (first argument)
    assert hand_kl(ORIG_S, EMB_S) != pytest.approx(hand_kl(EMB_S, ORIG_S), rel=1e-3)
    assert embedding_kl(t(EMB_S), t(ORIG_S)).item() == pytest.approx(hand_kl(EMB_S, ORIG_S), rel=1e-10)


def test_embedding_kl_sums_over_the_batch():
    one = embedding_kl(t(ORIG_S[:1]), t(EMB_S[:1])).item()
    two = embedding_kl(t(ORIG_S[1:]), t(EMB_S[1:])).item()
    assert embedding_kl(t(ORIG_S), t(EMB_S)).item() == pytest.approx(one + two, rel=1e-12)


def test_embedding_kl_zero_when_equal_and_positive_otherwise():
    emb = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    assert embedding_kl(emb, emb.clone()).item() == pytest.approx(0.0, abs=1e-5)
    assert embedding_kl(emb, emb + 5.0).item() == pytest.approx(0.0, abs=1e-5)  # softmax is shift-invariant
    assert embedding_kl(emb, emb.flip(1)).item() > 0.1


def test_representation_loss_by_hand():
    kl_s, kl_f = hand_kl(ORIG_S, EMB_S), hand_kl(ORIG_CF, EMB_F)
    default = representation_loss(t(ORIG_S), t(EMB_S), t(ORIG_CF), t(EMB_F)).item()
    assert default == pytest.approx(0.5 * kl_s + 0.5 * kl_f, rel=1e-10)
    weighted = representation_loss(t(ORIG_S), t(EMB_S), t(ORIG_CF), t(EMB_F), 0.3, 2.0).item()
    assert weighted == pytest.approx(0.3 * kl_s + 2.0 * kl_f, rel=1e-10)


def test_output_loss_by_hand():
    logits_s = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [0.3, 0.3, 3.0]]
    y_s = [0, 2, 2]
    logits_f = [[1.0, -1.0, 0.5], [0.0, 0.0, 4.0]]
    y_cf = [1, 0]
    ce_s, ce_f = hand_ce(logits_s, y_s), hand_ce(logits_f, y_cf)
    args = (t(logits_s), torch.tensor(y_s), t(logits_f), torch.tensor(y_cf))
    assert output_loss(*args).item() == pytest.approx(0.9 * ce_s + 0.01 * ce_f, rel=1e-10)
    assert output_loss(*args, w_remain=0.2, w_forget=3.0).item() == pytest.approx(0.2 * ce_s + 3.0 * ce_f,
                                                                                  rel=1e-10)


def test_losses_have_gradients():
    emb = t(EMB_S).requires_grad_()
    representation_loss(t(ORIG_S), emb, t(ORIG_CF), t(EMB_F)).backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_camu_step_updates_the_model_only():
    torch.manual_seed(0)
    original = CNN().eval()
    for p in original.parameters():
        p.requires_grad_(False)
    model = copy.deepcopy(original).train()
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = copy.deepcopy(original.state_dict())
    before = copy.deepcopy(model.state_dict())
    cfg = Config()
    opt_kl = torch.optim.Adam(model.parameters(), lr=cfg.rep_lr, weight_decay=cfg.weight_decay)
    opt_out = torch.optim.Adam(model.parameters(), lr=cfg.out_lr, weight_decay=cfg.weight_decay)
    x_s, y_s = batch(8, 1)
    x_f, _ = batch(8, 2)
    x_cf, y_cf = batch(8, 3)
    rep, out = camu_step(model, original, opt_kl, opt_out, x_s, y_s, x_f, x_cf, y_cf, cfg)
    assert rep.ndim == 0 and out.ndim == 0
    assert not rep.requires_grad and not out.requires_grad
    assert math.isfinite(rep.item()) and math.isfinite(out.item())
    assert rep.item() >= 0 and out.item() > 0
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k, v in original.state_dict().items():
        assert torch.equal(v, frozen[k]), k


def test_camu_step_losses_match_the_formulas():
    """The returned losses are docs/method.md's losses of the state before each step."""
    torch.manual_seed(1)
    original = CNN().eval()
    model = CNN().train()
    start = copy.deepcopy(model)
    cfg = Config()
    opt_kl = torch.optim.Adam(model.parameters(), lr=cfg.rep_lr, weight_decay=cfg.weight_decay)
    opt_out = torch.optim.Adam(model.parameters(), lr=cfg.out_lr, weight_decay=cfg.weight_decay)
    x_s, y_s = batch(6, 4)
    x_f, _ = batch(6, 5)
    x_cf, y_cf = batch(6, 6)
    with torch.no_grad():
        expected_rep = (0.5 * embedding_kl(original(x_s)[1], start(x_s)[1])
                        + 0.5 * embedding_kl(original(x_cf)[1], start(x_f)[1]))
    rep, _ = camu_step(model, original, opt_kl, opt_out, x_s, y_s, x_f, x_cf, y_cf, cfg)
    assert rep.item() == pytest.approx(expected_rep.item(), rel=1e-4)


def test_forward_pair_cnn_matches_separate_calls():
    torch.manual_seed(0)
    model = CNN()
    a, _ = batch(5, 7)
    b, _ = batch(3, 8)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    for mode in (True, False):
        model.train(mode)
        calls.clear()
        (la, ea), (lb, eb) = forward_pair(model, a, b)
        assert len(calls) == 1  # one concatenated pass
        with torch.no_grad():
            ra, rb = model(a), model(b)
        assert la.shape == (5, 10) and lb.shape == (3, 10) and ea.shape == (5, 256) and eb.shape == (3, 256)
        torch.testing.assert_close(la, ra[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ea, ra[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lb, rb[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(eb, rb[1], rtol=1e-5, atol=1e-5)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        emb = self.bn(self.fc(x))
        return self.out(emb), emb


def test_forward_pair_batchnorm_train_mode_calls_separately():
    torch.manual_seed(0)
    model = BNNet().train()
    a = torch.randn(8, 4)
    b = torch.randn(6, 4) * 3 + 2  # other batch statistics than a
    assert has_batch_statistics(model)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    (la, ea), (lb, eb) = forward_pair(model, a, b)
    assert len(calls) == 2
    ra, rb = model(a), model(b)
    assert torch.equal(la, ra[0]) and torch.equal(ea, ra[1])
    assert torch.equal(lb, rb[0]) and torch.equal(eb, rb[1])
    # a concatenated pass would have computed something else here
    joint_logits, _ = model(torch.cat([a, b]))
    assert not torch.allclose(joint_logits[:8], la, atol=1e-3)


def test_forward_pair_batchnorm_eval_mode_concatenates():
    torch.manual_seed(0)
    model = BNNet()
    model.train()
    model(torch.randn(32, 4) * 2 + 1)  # give the running statistics non-trivial values
    model.eval()
    assert not has_batch_statistics(model)
    a, b = torch.randn(8, 4), torch.randn(6, 4) * 3 + 2
    (la, ea), (lb, eb) = forward_pair(model, a, b)
    torch.testing.assert_close(la, model(a)[0])
    torch.testing.assert_close(eb, model(b)[1])
