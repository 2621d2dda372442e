"""Shared fixtures: an MNIST copy (found or downloaded once, see datafind.py) and small configs over it."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datafind import SKIP_PREFIX, find_mnist  # noqa: E402

import eval.mia_suite  # noqa: E402,F401  (registers the attack names config validates, as entry points do)
import unlearn  # noqa: E402,F401  (registers the method names)
from config import Config, validate  # noqa: E402
from data import load_dataset  # noqa: E402


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[Path | None, str]:
    return find_mnist()


@pytest.fixture(scope="session")
def data_root() -> Path:
    root, why = _mnist()
    if root is None:
        pytest.skip(why)
    return root


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """One closing line when data tests skipped for want of MNIST, with the reason."""
    skipped = terminalreporter.stats.get("skipped", [])
    ours = [r for r in skipped if SKIP_PREFIX in str(getattr(r, "longrepr", ""))]
    if ours:
        terminalreporter.write_line(f"{len(ours)} data tests skipped: {_mnist()[1]}", yellow=True, bold=True)


@pytest.fixture(scope="session")
def mnist_small(data_root: Path):
    """The first 3000 training and 1000 test samples of MNIST, on the CPU."""
    return load_dataset("mnist", data_root, download=False, device="cpu", train_limit=3000, test_limit=1000)


@pytest.fixture()
def small_cfg(data_root: Path, tmp_path: Path) -> Config:
    """A validated config over a small MNIST slice writing under a temporary folder, on the CPU also where a
    GPU exists (tests compare CPU numbers and record the CPU; tests/test_cuda.py sets the device itself)."""
    torch.set_num_threads(2)
    return validate(Config(data_root=str(data_root), download=False, train_limit=3000, test_limit=1000,
                           train_epochs=2, seeds=[0], out_dir=str(tmp_path / "runs"), num_threads=2, device="cpu"))
