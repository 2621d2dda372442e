"""The tensor data path against a plain reference built the release's way.

The reference reads samples one by one through torchvision's dataset with ``ToTensor()``
and a DataLoader at batch 32, finds the forget set and the remaining set by scanning
Python lists, relabels counterfactuals in a Python loop and counts correct predictions
batch by batch. The fast path must give the same indices, labels and accuracies.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from data import build_counterfactuals, generator, make_split
from eval import accuracy, predict
from models import build_model

LIMIT = 2000


def reference_dataset(root):
    full = datasets.MNIST(root=str(root), train=True, download=False, transform=transforms.ToTensor())
    return Subset(full, range(LIMIT))


def test_inputs_equal_to_tensor_transform(data_root, mnist_small):
    ref = reference_dataset(data_root)
    for i in (0, 1, 777, LIMIT - 1):
        x, y = ref[i]
        assert torch.equal(mnist_small.inputs(mnist_small.train.images[i:i + 1], train=True)[0], x)
        assert int(mnist_small.train.labels[i]) == y


def test_class_split_equals_list_scan(data_root, mnist_small):
    ref = reference_dataset(data_root)
    labels = [int(ref[i][1]) for i in range(len(ref))]
    forget_ref = [i for i, y in enumerate(labels) if y == 3]
    remain_ref = [i for i in range(len(labels)) if i not in set(forget_ref)]
    labels_t = mnist_small.train.labels[:LIMIT]
    split = make_split(labels_t, "class", 3, 0.1, 1, generator(5, "split"))
    assert split.forget.tolist() == forget_ref
    assert split.remain.tolist() == remain_ref
    # the sample set is the release's draw: a uniform subset of D_r of size |D_f|
    order = torch.randperm(len(remain_ref), generator=generator(5, "split"))[: len(forget_ref)]
    assert split.sample.tolist() == [remain_ref[i] for i in order.tolist()]


def test_random_split_equals_list_scan(mnist_small):
    labels = mnist_small.train.labels[:LIMIT]
    split = make_split(labels, "random", 0, 0.1, 1, generator(2, "split"))
    g = generator(2, "split")
    chosen = torch.randperm(LIMIT, generator=g)[: round(0.1 * LIMIT)].tolist()
    assert sorted(chosen) == split.forget.tolist()
    remain_ref = [i for i in range(LIMIT) if i not in set(chosen)]
    assert split.remain.tolist() == remain_ref
    order = torch.randperm(len(remain_ref), generator=g)[: len(chosen)]
    assert split.sample.tolist() == [remain_ref[i] for i in order.tolist()]


def test_counterfactual_labels_equal_python_loop(mnist_small):
    split = make_split(mnist_small.train.labels, "random", 0, 0.1, 1, generator(4, "split"))
    cf = build_counterfactuals(mnist_small, split, seed=4)
    labels = mnist_small.train.labels.tolist()
    draws = torch.randint(0, 9, (len(cf),), generator=generator(4, "counterfactual/labels")).tolist()
    expected = []
    for f, s, r in zip(cf.forget_index.tolist(), cf.sample_index.tolist(), draws, strict=True):
        y_f, y_s = labels[f], labels[s]
        others = [c for c in range(10) if c != y_f]  # the release draws from the other labels
        expected.append(y_s if y_s != y_f else others[r])
    assert cf.y_cf.tolist() == expected
    assert any(labels[s] == labels[f] for f, s in zip(cf.forget_index.tolist(), cf.sample_index.tolist(),
                                                      strict=True)), "the case must exercise a re-draw"


def test_accuracy_equals_dataloader_count(data_root, mnist_small):
    torch.manual_seed(0)
    model = build_model("cnn", 10)
    with torch.no_grad():  # a model with some skill, so both right and wrong rows occur
        model.embed.weight.mul_(3.0)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in DataLoader(reference_dataset(data_root), batch_size=32, shuffle=False):
            correct += int((model(x)[0].argmax(1) == y).sum())
            total += len(y)
    logits = predict(model, mnist_small, mnist_small.train.images[:LIMIT], batch_size=1024)
    fast = accuracy(logits, mnist_small.train.labels[:LIMIT])
    assert abs(fast - 100.0 * correct / total) < 1e-9
    assert 0 < correct < total
