"""Accuracy, softmax features and the release's membership-inference attack."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval import accuracy, attack_accuracy, faithful_mia, predict, sorted_softmax


def test_accuracy_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 1])  # the last row is wrong
    assert accuracy(logits, labels) == pytest.approx(75.0)
    assert accuracy(logits, torch.tensor([0, 1, 2, 0])) == pytest.approx(100.0)
    assert accuracy(logits, torch.tensor([1, 0, 0, 2])) == pytest.approx(0.0)
    assert accuracy(logits[:3], labels[:3]) == pytest.approx(100.0)
    assert accuracy(logits[1:], labels[1:]) == pytest.approx(200 / 3)


def test_accuracy_of_empty_set_is_nan():
    assert math.isnan(accuracy(torch.empty(0, 10), torch.empty(0, dtype=torch.int64)))


def test_a_diverged_models_logits_score_nan_not_a_number_it_did_not_earn():
    """NaN logits argmax to class 0: a class-0 forget set scored 100 % and the faithful MIA chance (0.5)."""
    nan = torch.full((30, 10), float("nan"))
    assert math.isnan(accuracy(nan, torch.zeros(30, dtype=torch.int64)))
    assert math.isnan(accuracy(torch.tensor([[1.0, float("inf")], [2.0, 0.0]]), torch.tensor([1, 0])))
    torch.manual_seed(0)
    sample, test, forget = torch.randn(50, 10), torch.randn(60, 10), torch.randn(20, 10)
    assert not math.isnan(faithful_mia(sample, test, forget, train_size=40, n_jobs=1))
    for which in range(3):
        logits = [sample.clone(), test.clone(), forget.clone()]
        logits[which][3, 2] = float("nan")
        assert math.isnan(faithful_mia(*logits, train_size=40, n_jobs=1)), which


def test_sorted_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 10, generator=g) * 3
    feats = sorted_softmax(logits)
    assert isinstance(feats, np.ndarray) and feats.dtype == np.float64 and feats.shape == (50, 10)
    assert (np.diff(feats, axis=1) >= 0).all()
    np.testing.assert_allclose(feats.sum(axis=1), 1.0, rtol=1e-6)
    expected = np.sort(torch.softmax(logits.double(), dim=1).numpy(), axis=1)
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-7)
    # label-agnostic: permuting the classes changes nothing
    np.testing.assert_allclose(sorted_softmax(logits[:, torch.randperm(10, generator=g)]), feats, rtol=1e-6)


def member_like(n, rng, classes=10):
    """Confident outputs, sorted: almost all mass on one class."""
    x = np.abs(rng.normal(0, 0.01, (n, classes)))
    x[:, -1] = 1.0
    x /= x.sum(axis=1, keepdims=True)
    return np.sort(x, axis=1)


def nonmember_like(n, rng, classes=10):
    """Spread outputs, sorted: close to uniform."""
    x = 1.0 + rng.uniform(0, 0.1, (n, classes))
    x /= x.sum(axis=1, keepdims=True)
    return np.sort(x, axis=1)


def test_attack_separable():
    rng = np.random.default_rng(0)
    score = attack_accuracy(member_like(300, rng), nonmember_like(300, rng), member_like(200, rng),
                            nonmember_like(200, rng), n_jobs=2)
    assert score > 0.95


def test_attack_same_distribution_is_chance():
    rng = np.random.default_rng(1)

    def rows(n):
        return sorted_softmax(torch.from_numpy(rng.normal(0, 2, (n, 10))))

    score = attack_accuracy(rows(500), rows(500), rows(500), rows(500), n_jobs=2)
    assert 0.35 < score < 0.65


def test_attack_is_deterministic():
    rng = np.random.default_rng(2)
    args = [sorted_softmax(torch.from_numpy(rng.normal(0, s, (200, 10)))) for s in (3, 1, 3, 1)]
    assert attack_accuracy(*args, seed=4, n_jobs=2) == attack_accuracy(*args, seed=4, n_jobs=2)


def logits_from(probs):
    return torch.from_numpy(np.log(probs))


def test_faithful_mia_uses_the_right_test_rows():
    """Test rows [:n] train the attacker as non-members, rows [n:n + |D_f|] evaluate it, later ones are unused."""
    rng = np.random.default_rng(3)
    n, n_forget = 200, 100
    sample = logits_from(member_like(400, rng))
    forget = logits_from(member_like(n_forget, rng))
    train_nonmembers = nonmember_like(n, rng)

    # evaluation rows look like non-members, trailing rows like members: a perfect score
    test = np.concatenate([train_nonmembers, nonmember_like(n_forget, rng), member_like(300, rng)])
    clean = faithful_mia(sample, logits_from(test), forget, train_size=n, n_jobs=2)
    assert clean > 0.95

    # the same with evaluation rows that look like members: the attacker calls them members
    test = np.concatenate([train_nonmembers, member_like(n_forget, rng), member_like(300, rng)])
    fooled = faithful_mia(sample, logits_from(test), forget, train_size=n, n_jobs=2)
    assert fooled < 0.6


class Doubler(torch.nn.Module):
    def forward(self, x):
        flat = x.flatten(1)[:, :3] * 2
        return flat, flat


class Data:
    num_classes = 3

    @staticmethod
    def inputs(images, train, gen=None):
        return images + (100.0 if train else 0.0)


def test_predict_batches_and_restores_mode():
    model = Doubler().train()
    images = torch.arange(10 * 4, dtype=torch.float32).view(10, 4)
    out = predict(model, Data(), images, batch_size=3)
    torch.testing.assert_close(out, images[:, :3] * 2)
    assert model.training
    out = predict(model, Data(), images, batch_size=4, train_transform=True)
    torch.testing.assert_close(out, (images[:, :3] + 100) * 2)
    assert predict(model, Data(), images[:0]).shape == (0, 3)


def test_faithful_mia_without_rows_to_fit_on_is_nan_not_a_score():
    """A one-row test set left the attacker nothing to fit on; it still returned a number (0.03)."""
    torch.manual_seed(0)
    sample, forget = torch.randn(50, 10), torch.randn(20, 10)
    assert math.isnan(faithful_mia(sample, torch.randn(1, 10), forget, train_size=40, n_jobs=1))
    assert math.isnan(faithful_mia(sample[:0], torch.randn(30, 10), forget, train_size=40, n_jobs=1))
    assert 0.0 <= faithful_mia(sample, torch.randn(30, 10), forget, train_size=40, n_jobs=1) <= 1.0


def test_faithful_mia_says_when_a_slice_leaves_it_fewer_rows(capsys):
    """On a slice the attacker silently fitted on fewer rows than mia_train_size; now one line says so."""
    from eval.evaluate import say_reduced_mia_rows
    from eval.mia import mia_rows

    assert mia_rows(4000, 54000, 10000, 5923) == (4000, 5923)  # MNIST class 0: the protocol's rows
    assert mia_rows(4000, 900, 1000, 300) == (500, 300)  # fit capped by half the test set
    assert mia_rows(4000, 100, 1000, 950) == (100, 900)  # fit by D_s; the held-out rows by the test set
    say_reduced_mia_rows(4000, 54000, 10000, 5923)
    assert capsys.readouterr().err == ""
    say_reduced_mia_rows(4000, 100, 1000, 950)
    say_reduced_mia_rows(4000, 100, 1000, 950)  # once per set of sizes
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fit on 100 members" in err[0] and "950 forget rows and 900 unseen" in err[0]
