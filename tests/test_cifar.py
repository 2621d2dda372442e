"""CIFAR: tiny datasets in torchvision's on-disk format, the batch transforms, one whole run."""

from __future__ import annotations

import importlib
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

import main
from config import Config, validate
from data import DataError, load_dataset
from data.augment import MEAN, STD, random_resized_crop_boxes

ROOT = Path(__file__).resolve().parents[1]
PER_BATCH = 8
TEST_SIZE = 16


def _pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, per_batch=PER_BATCH):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        _dump(folder / f"data_batch_{b}", {"data": _pixels(per_batch, b),
                                           "labels": [i % 5 for i in range(per_batch)]})
    _dump(folder / "test_batch", {"data": _pixels(TEST_SIZE, 0), "labels": [i % 5 for i in range(TEST_SIZE)]})
    _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})


def write_cifar100(root, train_size=16, test_size=TEST_SIZE):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, seed in (("train", train_size, 1), ("test", test_size, 2)):
        labels = [i % 5 for i in range(n)]
        _dump(folder / name, {"data": _pixels(n, seed), "fine_labels": labels, "coarse_labels": labels})
    _dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                            "coarse_label_names": [f"c{i}" for i in range(20)]})


@pytest.fixture()
def no_md5(monkeypatch):
    """The tiny files cannot match torchvision's checksums of the real ones."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)


def test_load_cifar10(tmp_path, no_md5):
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.num_classes == 10
    assert data.train.images.dtype == torch.uint8
    assert data.train.images.shape == (5 * PER_BATCH, 3, 32, 32)
    assert data.test.images.shape == (TEST_SIZE, 3, 32, 32)
    expected = np.concatenate([_pixels(PER_BATCH, b) for b in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(data.train.images.numpy(), expected)  # channel-first, as stored in the file
    assert np.array_equal(data.test.images.numpy(), _pixels(TEST_SIZE, 0).reshape(-1, 3, 32, 32))
    assert data.train.labels.dtype == torch.int64
    assert data.train.labels.tolist() == [i % 5 for i in range(PER_BATCH)] * 5
    assert data.test.labels.tolist() == [i % 5 for i in range(TEST_SIZE)]
    limited = load_dataset("cifar10", tmp_path, download=False, train_limit=10, test_limit=3)
    assert len(limited.train) == 10 and len(limited.test) == 3
    assert torch.equal(limited.train.images, data.train.images[:10])


def test_load_cifar100(tmp_path, no_md5):
    write_cifar100(tmp_path)
    data = load_dataset("cifar100", tmp_path, download=False)
    assert data.num_classes == 100
    assert data.train.images.shape == (16, 3, 32, 32)
    assert data.train.labels.tolist() == [i % 5 for i in range(16)]


def test_test_transform_is_resize_and_normalise(tmp_path, no_md5):
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    x = data.inputs(data.test.images[:4], train=False)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    # a constant-colour image stays constant through the resize: (v / 255 - mean) / std
    colour = torch.tensor([10, 128, 250], dtype=torch.uint8)
    flat = colour.view(1, 3, 1, 1).expand(2, 3, 32, 32).contiguous()
    out = data.inputs(flat, train=False)
    expected = (colour.float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand_as(out), rtol=1e-5, atol=1e-5)
    # the test transform draws nothing: the same output every time
    assert torch.equal(x, data.inputs(data.test.images[:4], train=False))


def test_train_transform_draws_per_image(tmp_path, no_md5):
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    twins = data.train.images[:1].expand(6, 3, 32, 32).contiguous()
    out = data.inputs(twins, train=True, gen=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 224, 224)
    distinct = {tuple(out[i].flatten()[::997].tolist()) for i in range(6)}
    assert len(distinct) > 1  # identical images, their own crops and flips
    again = data.inputs(twins, train=True, gen=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = data.inputs(twins, train=True, gen=torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)
    # values stay within the normalised pixel range
    low = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert (out >= low.view(1, 3, 1, 1) - 1e-4).all() and (out <= high.view(1, 3, 1, 1) + 1e-4).all()


def test_train_flip_is_drawn_per_image(tmp_path, no_md5, monkeypatch):
    """With the crop fixed to the whole image, each of many twins is either kept or mirrored, about half each."""
    import data.augment as augment

    monkeypatch.setattr(augment, "random_resized_crop_boxes",
                        lambda n, size, gen=None: torch.tensor([[0.0, 0.0, size, size]]).repeat(n, 1))
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    twins = data.train.images[:1].expand(200, 3, 32, 32).contiguous()
    plain = data.inputs(twins[:1], train=False)[0]
    out = data.inputs(twins, train=True, gen=torch.Generator().manual_seed(0))
    kept = torch.tensor([torch.allclose(o, plain, atol=1e-4) for o in out])
    mirrored = torch.tensor([torch.allclose(o, plain.flip(-1), atol=1e-4) for o in out])
    assert (kept | mirrored).all()
    assert 60 < int(mirrored.sum()) < 140


def test_train_transform_of_constant_image_is_constant(tmp_path, no_md5):
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    flat = torch.full((3, 3, 32, 32), 77, dtype=torch.uint8)
    out = data.inputs(flat, train=True, gen=torch.Generator().manual_seed(0))
    expected = (77 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand_as(out), rtol=1e-4, atol=1e-4)


class _Probe(torch.nn.Module):
    """Logits from pooled pixels: they change with the augmentation."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = x.float().mean(dim=(2, 3))
        return self.linear(features), features


def test_the_suite_attacks_see_the_training_set_unaugmented(tmp_path, no_md5, monkeypatch):
    """SalUn's release converts D_r, D_f and the test set to the test transform before MIA-efficacy;
    the accuracies and the release's XGBoost MIA keep CaMU's augmented training-set pass."""
    from data.splits import make_split
    from eval.predict import predict
    from models.runtime import Runtime

    ev = importlib.import_module("eval.evaluate")  # the package's ``evaluate`` is the function
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    torch.manual_seed(0)
    model = _Probe()
    cfg = Config(dataset="cifar10", eval_train_augment=True, mia_attacks=["efficacy"], mia_train_size=8)
    split = make_split(data.train.labels, "class", 0, 0.1, 1, torch.Generator().manual_seed(0))
    seen = {}
    monkeypatch.setattr(ev, "mia_suite", lambda names, m, d, s, c, seed, train, test: seen.update(suite=train) or {})
    monkeypatch.setattr(ev, "mia_score", lambda train, test, s, c, seed: seen.update(mia=train) or 0.5)
    ev.evaluate(model, data, split, cfg, seed=3)
    augmented, _ = ev.all_logits(model, data, cfg, 3)
    # the evaluation's own runtime: bf16 autocast on a CPU with native bfloat16 rounds the logits
    plain = predict(model, data, data.train.images, runtime=Runtime.from_config(cfg, augmented.device))
    assert not torch.allclose(augmented, plain)
    assert torch.equal(seen["mia"], augmented) and torch.allclose(seen["suite"], plain)
    seen.clear()
    ev.evaluate(model, data, split, Config(dataset="cifar10", eval_train_augment=False, mia_attacks=["efficacy"]), 3)
    assert torch.equal(seen["suite"], seen["mia"])  # one pass when nothing is augmented


def test_random_resized_crop_boxes():
    n, size = 4000, 224
    boxes = random_resized_crop_boxes(n, size, torch.Generator().manual_seed(0))
    assert boxes.shape == (n, 4)
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= size).all() and (y2 <= size).all()
    assert torch.equal(boxes, boxes.round())  # whole pixels, as torchvision's integer crop
    w, h = x2 - x1, y2 - y1
    assert (w > 0).all() and (h > 0).all()
    area = w * h / size**2
    aspect = w / h
    assert area.min() >= 0.08 * 0.97 and area.max() <= 1.0
    assert aspect.min() >= 0.75 * 0.97 and aspect.max() <= 4 / 3 * 1.03
    # the draws cover the range (not a constant crop)
    assert area.min() < 0.15 and area.max() > 0.9
    assert aspect.min() < 0.8 and aspect.max() > 1.25
    assert len(torch.unique(x1)) > 50 and len(torch.unique(y1)) > 50
    # mean area of the first fitting draw (uniform area, most draws fit): clearly below 1
    assert 0.4 < area.mean().item() < 0.7
    same = random_resized_crop_boxes(n, size, torch.Generator().manual_seed(0))
    assert torch.equal(boxes, same)


def test_cifar100_class_run(tmp_path, capsys):
    """A tiny copy cannot match torchvision's checksums: verify_data=false runs on it, recorded as such."""
    write_cifar100(tmp_path / "data", train_size=10, test_size=10)  # ResNet-18 at 224 on a CPU: few images
    torch.set_num_threads(2)
    cfg = validate(Config(dataset="cifar100", scenario="class", forget_class=0, forget_repeat=2, train_epochs=1,
                          batch_size=8, unlearn_epochs=1, eval_batch_size=16, mia_train_size=4, seeds=[0],
                          data_root=str(tmp_path / "data"), download=False, out_dir=str(tmp_path / "runs"),
                          num_threads=2, verify_data=False))
    doc = main.run(cfg, log=lambda _: None)
    saved = json.loads((cfg.run_dir / "results.json").read_text())
    assert saved["seeds"] == doc["seeds"]
    row = saved["seeds"][0]
    assert math.isfinite(row["remain_acc"]) and 0 <= row["remain_acc"] <= 100
    assert math.isfinite(row["forget_acc"]) and math.isfinite(row["mia"])
    per_seed = saved["meta"]["per_seed"][0]
    assert per_seed["forget"] == 2 * 2  # two class-0 images (of 10), repeated twice
    assert per_seed["sample"] == 4 and per_seed["remain"] == 8
    assert per_seed["traces"]["counterfactuals"] == 4
    assert len(per_seed["traces"]["loss_rep"]) == 1  # one batch pair of 8 for the one epoch
    assert saved["meta"]["original"]["trained_now"] is True
    assert saved["config"]["dataset"] == "cifar100"
    assert saved["config"]["verify_data"] is False
    assert capsys.readouterr().err.count("verify_data=false") <= 1  # warned at most once per process


@pytest.mark.parametrize("name, writer", [("cifar10", write_cifar10), ("cifar100", write_cifar100)])
def test_modified_copy_is_reported_as_present_but_different(tmp_path, name, writer, capsys):
    """Files that are there but are not the originals: exit 1, one line saying so, nothing written."""
    writer(tmp_path / "data")
    out = tmp_path / "runs"
    assert main.main([f"--dataset={name}", f"--data_root={tmp_path / 'data'}", "--download=false",
                      f"--out_dir={out}", "--seeds=0"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("data error:") and "all files are present" in line and "checksums" in line
    assert "not found" not in line and "--verify_data=false" in line
    assert not out.exists()


@pytest.mark.parametrize("name, writer", [("cifar10", write_cifar10), ("cifar100", write_cifar100)])
def test_verify_data_false_loads_a_modified_copy(tmp_path, name, writer, capsys):
    writer(tmp_path)
    data = load_dataset(name, tmp_path, download=False, verify=False)
    assert len(data.train) > 0 and data.train.images.dtype == torch.uint8
    with pytest.raises(DataError, match="differ from torchvision's checksums"):
        load_dataset(name, tmp_path, download=False)


def test_missing_cifar_files_are_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"cifar10: data_batch_3 not found in .*cifar-10-batches-py \(the other files "
                                         r"are there\); download is off"):
        load_dataset("cifar10", tmp_path, download=False, verify=False)


def test_concept_poison_on_cifar_with_nmf_bank_and_localized_patches(tmp_path, no_md5):
    """The CIFAR path of the concept method: uint8 images, ResNet BatchNorm (full forward in train mode), NMF
    concepts, pixel IG for the patches; the fine-tuning leaves every non-fc parameter where it was."""
    write_cifar10(tmp_path / "data", per_batch=4)  # ResNet-18 at 224 on a CPU: few images
    torch.set_num_threads(2)
    cfg = validate(Config(dataset="cifar10", scenario="class", forget_class=0, train_epochs=1, batch_size=8,
                          seeds=[0], data_root=str(tmp_path / "data"), download=False, verify_data=False,
                          out_dir=str(tmp_path / "runs"), num_threads=2, method="concept_poison",
                          concept_bank="nmf", concept_nmf_components=3, concept_quantile=0.25,
                          concept_poison_mode="localized", concept_poison_ig_steps=2, concept_poison_epochs=1,
                          concept_examples=20, compare_retrain=False, mia_train_size=4, eval_batch_size=16))
    data = load_dataset("cifar10", cfg.data_root, download=False, verify=False)
    original, _ = main.original_model(cfg, data)
    split = main.split_for_seed(cfg, data.train.labels, 0)
    from unlearn import METHODS
    from unlearn.base import UnlearnTask
    model = main.Runtime.from_config(cfg, "cpu").copy(original)
    traces = METHODS["concept_poison"](model, original, UnlearnTask(data, split, 0), cfg)
    assert traces["donor"] != 0 and traces["concept_bank"] == "nmf" and traces["poisoned_rows"] == len(split.forget)
    before = dict(original.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith("fc."), name
