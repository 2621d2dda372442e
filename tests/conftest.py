"""Shared fixtures: the offline MNIST copy beside the checkout and small configs over it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT))

from config import Config, validate  # noqa: E402
from data import load_dataset  # noqa: E402


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (SHARED_DATASETS / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"offline MNIST not found under {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def mnist_small(data_root: Path):
    """The first 3000 training and 1000 test samples of MNIST, on the CPU."""
    return load_dataset("mnist", data_root, download=False, device="cpu", train_limit=3000, test_limit=1000)


@pytest.fixture()
def small_cfg(data_root: Path, tmp_path: Path) -> Config:
    """A validated config over a small MNIST slice writing under a temporary folder."""
    torch.set_num_threads(2)
    return validate(Config(data_root=str(data_root), download=False, train_limit=3000, test_limit=1000,
                           train_epochs=2, seeds=[0], out_dir=str(tmp_path / "runs"), num_threads=2))
