"""Forget / remain / sample splits and the per-purpose random streams."""

from __future__ import annotations

import time

import pytest
import torch

from data import DataError, generator, make_split
from data.rng import stream_seed


def synthetic_labels(n: int = 5000, classes: int = 10, seed: int = 123) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n,), generator=g)


def split_of(labels, scenario="class", forget_class=0, fraction=0.1, repeat=1, seed=0):
    return make_split(labels, scenario, forget_class, fraction, repeat, generator(seed, "split"))


def check_partition(split, n):
    forget = split.forget.unique()
    remain = split.remain
    assert split.forget.dtype == split.remain.dtype == split.sample.dtype == torch.int64
    assert len(remain.unique()) == len(remain)
    assert not set(forget.tolist()) & set(remain.tolist())
    assert sorted(forget.tolist() + remain.tolist()) == list(range(n))
    assert torch.equal(remain, remain.sort().values)


def check_sample(split):
    sample = split.sample.tolist()
    assert len(set(sample)) == len(sample)
    assert set(sample) <= set(split.remain.tolist())
    assert len(sample) == len(split.forget)


@pytest.fixture(params=["mnist", "synthetic"])
def labels(request):
    if request.param == "mnist":
        return request.getfixturevalue("mnist_small").train.labels
    return synthetic_labels()


@pytest.mark.parametrize("forget_class", [0, 3, 9])
def test_class_scenario_forgets_exactly_that_class(labels, forget_class):
    split = split_of(labels, "class", forget_class)
    expected = [i for i, y in enumerate(labels.tolist()) if y == forget_class]
    assert len(expected) > 0
    assert sorted(split.forget.tolist()) == expected
    check_partition(split, len(labels))
    check_sample(split)
    assert (labels[split.remain] != forget_class).all()


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_random_scenario_size_and_partition(labels, fraction):
    split = split_of(labels, "random", fraction=fraction, seed=5)
    assert len(split.forget) == round(fraction * len(labels))
    assert len(split.forget.unique()) == len(split.forget)
    check_partition(split, len(labels))
    check_sample(split)


def test_random_size_rounds_on_odd_sizes():
    for n in (1003, 1007, 999):
        split = split_of(synthetic_labels(n), "random", fraction=0.1)
        assert len(split.forget) == round(0.1 * n)


def test_random_forget_is_spread_over_classes():
    labels = synthetic_labels(20000)
    split = split_of(labels, "random", seed=1)
    counts = torch.bincount(labels[split.forget], minlength=10).float()
    expected = torch.bincount(labels, minlength=10).float() * 0.1
    assert ((counts - expected).abs() / expected).max() < 0.2


@pytest.mark.parametrize("scenario", ["class", "random"])
def test_forget_repeat(labels, scenario):
    split = split_of(labels, scenario, forget_class=2, repeat=3, seed=4)
    once = split_of(labels, scenario, forget_class=2, repeat=1, seed=4)
    unique = split.forget.unique()
    assert torch.equal(unique, once.forget.unique())
    assert len(split.forget) == 3 * len(unique)
    assert (torch.bincount(split.forget)[unique] == 3).all()
    assert len(split.sample) == 3 * len(unique)
    check_partition(split, len(labels))
    check_sample(split)


@pytest.mark.parametrize("scenario", ["class", "random"])
def test_same_seed_same_split(labels, scenario):
    a = split_of(labels, scenario, seed=11)
    b = split_of(labels, scenario, seed=11)
    assert torch.equal(a.forget, b.forget)
    assert torch.equal(a.remain, b.remain)
    assert torch.equal(a.sample, b.sample)


def test_different_seeds_give_different_splits(labels):
    a = split_of(labels, "random", seed=0)
    b = split_of(labels, "random", seed=1)
    assert not torch.equal(a.forget, b.forget)
    assert set(a.sample.tolist()) != set(b.sample.tolist())
    c = split_of(labels, "class", seed=0)
    d = split_of(labels, "class", seed=1)
    assert torch.equal(c.forget, d.forget)  # the class decides D_f ...
    assert set(c.sample.tolist()) != set(d.sample.tolist())  # ... the seed decides D_s


def test_sample_is_uniform_over_remain():
    labels = synthetic_labels(2000)
    split = split_of(labels, "class", forget_class=0)
    hits = torch.zeros(len(labels))
    for seed in range(200):
        hits[split_of(labels, "class", forget_class=0, seed=seed).sample] += 1
    rate = hits[split.remain] / 200
    expected = len(split.forget) / len(split.remain)
    assert rate.mean().item() == pytest.approx(expected, rel=1e-6)
    assert (hits[split.forget] == 0).all()
    # every remaining index is drawn sometimes, none far more often than chance
    assert (rate > 0).float().mean() > 0.95
    assert rate.max() < expected * 3


def test_errors():
    """A split the data cannot give is a data error (one line from every command), not a traceback."""
    labels = torch.tensor([1, 2, 3, 1, 2, 3])
    with pytest.raises(DataError, match="empty"):
        split_of(labels, "class", forget_class=0)
    with pytest.raises(ValueError):
        split_of(labels, "neither")
    with pytest.raises(DataError, match="D_s"):
        split_of(labels, "class", forget_class=1, repeat=3)


def test_splits_of_60000_labels_are_fast():
    labels = synthetic_labels(60000)
    for scenario in ("class", "random"):
        start = time.perf_counter()
        split = split_of(labels, scenario)
        elapsed = time.perf_counter() - start
        assert elapsed < 0.5, f"{scenario}: {elapsed:.2f} s"
        check_sample(split)


def test_generator_streams():
    a = torch.rand(5, generator=generator(0, "split"))
    assert torch.equal(a, torch.rand(5, generator=generator(0, "split")))
    assert not torch.equal(a, torch.rand(5, generator=generator(1, "split")))
    assert not torch.equal(a, torch.rand(5, generator=generator(0, "other")))
    assert stream_seed(0, "split") == stream_seed(0, "split")
    assert 0 <= stream_seed(12345, "x") < 2**32


def test_a_split_the_slice_cannot_give_stops_before_the_original_is_trained(data_root, tmp_path, capsys):
    import main

    out = tmp_path / "runs"
    argv = [f"--data_root={data_root}", "--download=false", f"--out_dir={out}", "--train_limit=1000",
            "--test_limit=300", "--scenario=random", "--forget_fraction=0.0004", "--seeds=0"]
    assert main.main(argv) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("data error: the forget set is empty") and "forget_fraction" in line
    assert not (out / "checkpoints").exists()  # said before minutes of training, not after
