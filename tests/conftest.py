"""Shared fixtures: an MNIST copy (found or downloaded once, see datafind.py) and small configs over it."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Iterator
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
from storage import write_bytes  # noqa: E402


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


@pytest.fixture(autouse=True)
def _determinism_restored() -> Iterator[None]:
    """A run with ``deterministic: true`` switches torch's process-wide flags (deterministic algorithms, cuDNN,
    TF32); the next test starts from the flags this one started with, whatever it ran."""
    from models import runtime

    flags = runtime._determinism_flags()
    yield
    runtime._set_determinism_flags(flags)


@pytest.fixture(scope="session")
def mnist_small(data_root: Path):
    """The first 3000 training and 1000 test samples of MNIST, on the CPU."""
    return load_dataset("mnist", data_root, download=False, device="cpu", train_limit=3000, test_limit=1000)


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints that ``small_cfg`` tests trained, for the later ones: training the slice's original and
    retrained models takes seconds per test, and a key trains to the same weights whichever test asks."""
    return tmp_path_factory.mktemp("trained_models")


@pytest.fixture()
def small_cfg(data_root: Path, tmp_path: Path, trained_models: Path) -> Iterator[Config]:
    """A validated config over a small MNIST slice writing under a temporary folder, on the CPU also where a
    GPU exists (tests compare CPU numbers and record the CPU; tests/test_cuda.py sets the device itself).

    Its checkpoint folder starts with copies of the models earlier tests trained (same key, same weights) and
    gives back what this test trained: a test that must see a model trained uses an out_dir of its own.
    """
    torch.set_num_threads(2)
    cfg = validate(Config(data_root=str(data_root), download=False, train_limit=3000, test_limit=1000,
                          train_epochs=2, seeds=[0], out_dir=str(tmp_path / "runs"), num_threads=2, device="cpu"))
    checkpoints = tmp_path / "runs" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for path in trained_models.glob("*.pt"):
        shutil.copyfile(path, checkpoints / path.name)
    yield cfg
    for path in checkpoints.glob("*.pt"):  # whole files only: the cache writes by rename, and so does write_bytes
        if not (trained_models / path.name).exists():
            write_bytes(trained_models / path.name, path.read_bytes())
