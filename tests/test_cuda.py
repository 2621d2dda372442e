"""CPU and GPU give the same run up to rounding: same splits, counterfactuals, labels and crops,
metrics within 0.5 points or two rows of their set (85 class-0 test rows: 1.2 points a row).
Runs only where CUDA exists (never in CI); see docs/cuda.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import main
from config import validate
from data import build_counterfactuals, load_dataset
from data.augment import random_resized_crop_boxes
from data.rng import generator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
METRICS = ("remain_acc", "forget_acc", "test_acc", "test_remain_acc", "test_forget_acc")


def test_mnist_class_removal_matches_between_devices(small_cfg, data_root):
    cpu = load_dataset("mnist", data_root, False, "cpu", small_cfg.train_limit, small_cfg.test_limit)
    gpu = load_dataset("mnist", data_root, False, "cuda", small_cfg.train_limit, small_cfg.test_limit)
    split_c = main.split_for_seed(small_cfg, cpu.train.labels, 0)
    split_g = main.split_for_seed(small_cfg, gpu.train.labels, 0)
    for name in ("forget", "remain", "sample"):
        assert torch.equal(getattr(split_c, name).cpu(), getattr(split_g, name).cpu())
    cf_c, cf_g = build_counterfactuals(cpu, split_c, 0), build_counterfactuals(gpu, split_g, 0)
    assert torch.equal(cf_c.y_cf, cf_g.y_cf.cpu()) and torch.equal(cf_c.forget_index, cf_g.forget_index.cpu())
    assert torch.allclose(cf_c.x_cf, cf_g.x_cf.cpu())
    rows = {}
    for device in ("cpu", "cuda"):
        cfg = validate(dataclasses.replace(small_cfg, device=device, compare_retrain=False, bf16="false",
                                           deterministic=True,  # TF32 off: float32 on both sides
                                           run_name=f"mnist-{device}",  # each device trains its own original
                                           out_dir=str(Path(small_cfg.out_dir) / device)))
        rows[device] = main.run(cfg, log=lambda _: None)["seeds"][0]
    test_y = cpu.test.labels
    n = {"remain_acc": len(split_c.remain), "forget_acc": len(split_c.forget), "test_acc": len(test_y),
         "test_remain_acc": int((test_y != 0).sum()), "test_forget_acc": int((test_y == 0).sum())}
    for key in METRICS:
        assert abs(rows["cpu"][key] - rows["cuda"][key]) <= max(0.5, 200 / n[key]), (key, rows)


def test_cifar_augmentation_parameters_match_between_devices():
    from data.augment import CifarTransform

    boxes = random_resized_crop_boxes(32, 224, generator(0, "x"))
    assert torch.equal(boxes, random_resized_crop_boxes(32, 224, generator(0, "x")))
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    on_cpu = CifarTransform("cpu")(images, train=True, gen=generator(1, "aug"))
    on_gpu = CifarTransform("cuda")(images.cuda(), train=True, gen=generator(1, "aug"))
    assert torch.allclose(on_cpu, on_gpu.cpu(), atol=1e-4)
