"""Where the tests find MNIST: an existing copy first, a one-time download last.

Order: ``$CAMU_DATA_ROOT``; ``datasets/`` in the repository; ``../shared/datasets`` beside the
checkout (the offline copy of the project's own machines); otherwise torchvision downloads
MNIST (about 11 MB) into ``datasets/`` once. Only when all of that fails do the data tests skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO_DATASETS = ROOT / "datasets"
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
SKIP_PREFIX = "MNIST unavailable"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def has_mnist(root: Path) -> bool:
    return all((root / "MNIST" / "raw" / name).exists() for name in MNIST_FILES)


def candidates() -> list[Path]:
    env = os.environ.get("CAMU_DATA_ROOT")
    return ([Path(env)] if env else []) + [REPO_DATASETS, SHARED_DATASETS]


def download_mnist(root: Path) -> None:
    from torchvision import datasets

    for train in (True, False):
        datasets.MNIST(str(root), train=train, download=True)


def find_mnist(download: Callable[[Path], None] = download_mnist) -> tuple[Path | None, str]:
    """``(root, "")`` of a usable MNIST copy, or ``(None, why not)``."""
    looked = candidates()
    for root in looked:
        if has_mnist(root):
            return root, ""
    try:
        download(REPO_DATASETS)
    except Exception as exc:  # offline: URLError, RuntimeError, OSError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = ", ".join(str(p) for p in looked)
        return None, (f"{SKIP_PREFIX}: not in {where} and the download failed ({reason}); "
                      "set CAMU_DATA_ROOT to a folder holding MNIST/raw/")
    if has_mnist(REPO_DATASETS):
        return REPO_DATASETS, ""
    return None, f"{SKIP_PREFIX}: the download into {REPO_DATASETS} left no MNIST/raw/ files"
