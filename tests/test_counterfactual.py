"""CaMU's counterfactual partners: pairing, noise and label re-draws."""

from __future__ import annotations

import pytest
import torch

from data import build_counterfactuals, generator, make_split
from data.counterfactual import redraw_labels


@pytest.fixture(scope="module")
def random_split(mnist_small):
    return make_split(mnist_small.train.labels, "random", 0, 0.1, 1, generator(0, "split"))


@pytest.fixture(scope="module")
def cf(mnist_small, random_split):
    return build_counterfactuals(mnist_small, random_split, seed=0)


def test_sizes_and_indices(cf, random_split):
    n = len(random_split.forget)
    assert len(cf) == n
    assert cf.x_f.shape == cf.x_cf.shape == (n, 1, 28, 28)
    assert cf.y_f.shape == cf.y_cf.shape == (n,)
    assert torch.equal(cf.forget_index.sort().values, random_split.forget.sort().values)
    assert torch.equal(cf.sample_index.sort().values, random_split.sample.sort().values)
    # shuffled, not in the split's order
    assert not torch.equal(cf.forget_index, random_split.forget)
    assert not torch.equal(cf.sample_index, random_split.sample)


def test_forget_rows(cf, mnist_small):
    assert torch.equal(cf.x_f, mnist_small.train.images[cf.forget_index])
    assert torch.equal(cf.y_f, mnist_small.train.labels[cf.forget_index])


def test_counterfactual_labels(cf, mnist_small):
    y_s = mnist_small.train.labels[cf.sample_index]
    assert (cf.y_cf != cf.y_f).all()
    keep = y_s != cf.y_f
    assert torch.equal(cf.y_cf[keep], y_s[keep])
    assert (~keep).any()  # the random split has same-label pairs, so the re-draw was exercised
    assert ((cf.y_cf >= 0) & (cf.y_cf < 10)).all()


def test_counterfactual_inputs_are_noised_samples(cf, mnist_small):
    noise = cf.x_cf.double() - mnist_small.train.images[cf.sample_index].double()
    assert noise.min().item() >= -1e-6
    assert noise.max().item() < 1 + 1e-6
    assert (noise != 0).any()
    # Uniform[0, 1): mean 1/2, standard deviation 1/sqrt(12), independent of the pixel
    assert noise.mean().item() == pytest.approx(0.5, abs=0.01)
    assert noise.std().item() == pytest.approx(12 ** -0.5, abs=0.01)
    assert noise.min().item() < 0.001 and noise.max().item() > 0.999


def test_building_leaves_the_dataset_untouched(mnist_small, random_split):
    before = mnist_small.train.images.clone()
    build_counterfactuals(mnist_small, random_split, seed=3)
    assert torch.equal(mnist_small.train.images, before)


def test_deterministic_per_seed(cf, mnist_small, random_split):
    again = build_counterfactuals(mnist_small, random_split, seed=0)
    for name in ("x_f", "y_f", "x_cf", "y_cf", "forget_index", "sample_index"):
        assert torch.equal(getattr(cf, name), getattr(again, name)), name
    other = build_counterfactuals(mnist_small, random_split, seed=1)
    assert not torch.equal(cf.forget_index, other.forget_index)
    assert not torch.equal(cf.x_cf, other.x_cf)


def test_class_scenario_every_label_kept(mnist_small):
    """Class removal: the sample set holds no forget-class rows, so y_cf is always y_s."""
    split = make_split(mnist_small.train.labels, "class", 0, 0.1, 1, generator(0, "split"))
    cf = build_counterfactuals(mnist_small, split, seed=0)
    assert (cf.y_f == 0).all()
    assert torch.equal(cf.y_cf, mnist_small.train.labels[cf.sample_index])


def test_redraw_labels_when_all_equal():
    n, classes, forget = 90000, 10, 3
    y_f = torch.full((n,), forget)
    y = redraw_labels(y_f.clone(), y_f, classes, generator(0, "test/redraw"))
    assert (y != forget).all()
    assert ((y >= 0) & (y < classes)).all()
    counts = torch.bincount(y, minlength=classes)
    assert counts[forget] == 0
    expected = n / (classes - 1)
    others = counts[torch.arange(classes) != forget].double()
    assert ((others - expected).abs() / expected).max() < 0.2


def test_redraw_labels_mixed():
    g = torch.Generator().manual_seed(0)
    classes = 100
    y_f = torch.randint(0, classes, (20000,), generator=g)
    y_s = torch.randint(0, classes, (20000,), generator=g)
    y_s[:10000] = y_f[:10000]
    y = redraw_labels(y_s, y_f, classes, generator(1, "test/redraw"))
    assert (y != y_f).all()
    differ = y_s != y_f
    assert torch.equal(y[differ], y_s[differ])
    # re-drawn labels reach the top and bottom classes too (no off-by-one at the edges)
    redrawn = y[~differ]
    assert redrawn.min() == 0 and redrawn.max() == classes - 1
    again = redraw_labels(y_s, y_f, classes, generator(1, "test/redraw"))
    assert torch.equal(y, again)
