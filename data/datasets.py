"""Datasets decoded once into tensors, with the release's transforms as batch functions.

torchvision's dataset classes read (and, when allowed, download) the files; from then on
every phase works on the same in-memory tensors, on the GPU when there is one.

- MNIST / Fashion-MNIST: the release applies ``ToTensor()`` only, so the stored tensor
  is already the model input (float in [0, 1], shape N x 1 x 28 x 28).
- CIFAR-10 / CIFAR-100: images stay uint8 N x 3 x 32 x 32 and are resized, augmented and
  normalised per batch on the device (see ``data.augment``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from data.augment import CifarTransform

if TYPE_CHECKING:
    from torchvision.datasets import VisionDataset


class DataError(RuntimeError):
    """The data cannot be had; the message is one line saying where it was looked for."""


class Transform(Protocol):
    def __call__(self, images: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor: ...


class Identity:
    """MNIST-style data: the stored tensor is the model input."""

    def __call__(self, images: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        return images


@dataclass
class ImageSet:
    images: torch.Tensor  # stored form: model input (MNIST) or uint8 pixels (CIFAR)
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx])


@dataclass
class Dataset:
    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    transform: Transform  # stored images -> model input, per batch

    def inputs(self, images: torch.Tensor, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        return self.transform(images, train, gen)

    @property
    def augments(self) -> bool:
        """Whether the training transform is random (then an input differs at every draw)."""
        return not isinstance(self.transform, Identity)


_CLASS_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def _torchvision_class(name: str) -> type[VisionDataset]:
    """torchvision's reader for ``name``, imported on first use (torchvision takes seconds to import,
    which every ``--help`` and config error would otherwise wait for)."""
    from torchvision import datasets as tv

    return getattr(tv, _CLASS_NAMES[name])


_IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
EXPECTED_FILES = {
    "mnist": ("MNIST/raw", _IDX_FILES),
    "fashion_mnist": ("FashionMNIST/raw", _IDX_FILES),
    "cifar10": ("cifar-10-batches-py", "data_batch_1..data_batch_5, test_batch, batches.meta"),
    "cifar100": ("cifar-100-python", "train, test, meta"),
}


class _UncheckedCifarMixin:
    """CIFAR read as it is on disk: files must exist, their MD5 sums are not compared."""

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f, _ in _cifar_files(self))

    def _load_meta(self) -> None:
        import pickle

        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            data = pickle.load(f, encoding="latin1")
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


@functools.cache
def _unchecked_class(name: str) -> type[VisionDataset]:
    """torchvision's CIFAR reader for ``name`` without its MD5 comparison."""
    base = _torchvision_class(name)
    return type(f"_Unchecked{base.__name__}", (_UncheckedCifarMixin, base), {})


def _cifar_files(cls: object) -> list[tuple[str, str]]:
    """Every file of a CIFAR folder with its torchvision MD5: the batches and the meta file."""
    return [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]


def _differ(files: list[str]) -> str:
    """'a, b differ' or 'a differs': the files a checksum check found changed."""
    return f"{', '.join(files)} {'differs' if len(files) == 1 else 'differ'}"


def _check_cifar(name: str, root: Path) -> None:
    """Say what is true of a CIFAR folder whose files are there but are not the originals."""
    if _missing_files(name, root):
        return  # missing files: torchvision's own path (download, or the not-found message) applies
    from torchvision.datasets import cifar as tv_cifar

    folder = root / EXPECTED_FILES[name][0]
    differ = [f for f, md5 in _cifar_files(_torchvision_class(name))
              if not tv_cifar.check_integrity(str(folder / f), md5)]  # CIFAR's own check
    if differ:
        raise DataError(f"{name}: all files are present in {folder}, but {_differ(differ)} from torchvision's "
                        "checksums of the originals (a modified, re-pickled or partial copy); "
                        "use --verify_data=false to run on them anyway (results are then marked unverified)")


# MD5 of the four uncompressed files torchvision keeps in ``raw/`` (it checks only the .gz archives it
# downloads, so a copy made or changed by hand was never compared): computed on the genuine files
# (the official archives, unpacked).
MNIST_FAMILY_MD5 = {
    "mnist": {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
              "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
              "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
              "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
    "fashion_mnist": {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                      "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                      "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                      "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
}


@functools.cache
def _md5(path: str, size: int, mtime_ns: int) -> str:
    """A file's MD5, once per process for each (size, mtime) it has (about 0.1 s for MNIST's 55 MB)."""
    import hashlib

    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_mnist_family(name: str, root: Path) -> None:
    """Say what is true of an MNIST / Fashion-MNIST folder whose files are there but are not the originals."""
    folder = root / EXPECTED_FILES[name][0]
    expected = MNIST_FAMILY_MD5[name]
    stats = {}
    for file in expected:
        try:
            stats[file] = os.stat(folder / file)
        except OSError:
            return  # a missing file: torchvision's own path (download, or the not-found message) applies
    differ = [f for f, md5 in expected.items()
              if _md5(str(folder / f), stats[f].st_size, stats[f].st_mtime_ns) != md5]
    if differ:
        raise DataError(f"{name}: all files are present in {folder}, but {_differ(differ)} from the originals' "
                        "checksums (a modified or partial copy); use --verify_data=false to run on them anyway "
                        "(results are then marked unverified)")


_warned_unverified: set[str] = set()


def _open(name: str, root: Path, train: bool, download: bool, verify: bool = True,
          transform: Callable | None = None) -> VisionDataset:
    folder, files = EXPECTED_FILES[name]
    cifar = name.startswith("cifar")
    if verify:
        (_check_cifar if cifar else _check_mnist_family)(name, root)
    elif name not in _warned_unverified:
        _warned_unverified.add(name)
        print(f"warning: verify_data=false: {name} files in {root / folder} are not checked against "
              "the originals' checksums; results record verify_data: false", file=sys.stderr)
    cls = _unchecked_class(name) if cifar and not verify else _torchvision_class(name)
    made = _missing_folders(root / folder)
    try:
        return cls(root=str(root), train=train, download=download, transform=transform)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, ...
        # one line, whole: torchvision's download error ends its first line with "...gz:" and the cause after
        reason = " ".join(str(exc).split())[:300] if str(exc) else type(exc).__name__
        if _all_present(name, root):
            raise DataError(f"{name}: the files in {root / folder} are there but cannot be read ({reason}); "
                            "a partial or damaged copy: replace it") from None
        _remove_if_empty(made)  # a failed download leaves no empty folder behind to be taken for data
        # with download off, torchvision's reason ("You can use download=True ...") names no key of ours
        how = f"download failed ({reason})" if download else "download is off"
        missing = _missing_files(name, root)
        what = (f"files not found in {root / folder} (expected {files})" if len(missing) == len(_file_names(name))
                else f"{', '.join(missing)} not found in {root / folder} (the other files are there)")
        raise DataError(f"{name}: {what}; {how}; "
                        "point --data_root (or CAMU_DATA_ROOT) at a folder that holds them") from None


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for path in folders:  # deepest first; a folder with anything in it stays
        try:
            path.rmdir()
        except FileNotFoundError:
            continue  # never made (CIFAR's folder comes with the archive; torchvision made only root)
        except OSError:
            return


def _file_names(name: str) -> list[str]:
    """Every file torchvision reads for ``name``."""
    return [f for f, _ in _cifar_files(_torchvision_class(name))] if name.startswith("cifar") \
        else list(MNIST_FAMILY_MD5[name])


def _missing_files(name: str, root: Path) -> list[str]:
    folder = root / EXPECTED_FILES[name][0]
    return [f for f in _file_names(name) if not (folder / f).is_file()]


def _all_present(name: str, root: Path) -> bool:
    return not _missing_files(name, root)


def _to_imageset(ds: VisionDataset, limit: int, device: torch.device) -> ImageSet:
    data = ds.data
    if isinstance(data, torch.Tensor):  # MNIST family: uint8 N x 28 x 28
        images = data[:, None].to(torch.float32).div_(255.0)
    else:  # CIFAR: numpy uint8 N x 32 x 32 x 3 -> N x 3 x 32 x 32
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    classes = len(ds.classes)
    if len(labels) and not (int(labels.min()) >= 0 and int(labels.max()) < classes):
        raise DataError(f"{type(ds).__name__.removeprefix('_Unchecked')}: labels outside 0..{classes - 1} in "
                        f"{ds.root} (a damaged copy)")
    if limit:
        images, labels = images[:limit], labels[:limit]
    return ImageSet(images.to(device), labels.to(device))


def torchvision_dataset(name: str, root: str | Path, train: bool, transform: Callable | None,
                        verify: bool = True) -> VisionDataset:
    """torchvision's own dataset object with a per-sample ``transform``, as the releases read data: for
    timing their loop (``bench.py``); the project itself works on ``load_dataset``'s tensors."""
    return _open(name, Path(root), train, download=False, verify=verify, transform=transform)


def load_dataset(name: str, root: str | Path, download: bool, device: torch.device | str = "cpu",
                 train_limit: int = 0, test_limit: int = 0, verify: bool = True) -> Dataset:
    """Both splits of ``name`` as tensors on ``device``; ``*_limit`` keeps the first N samples.

    ``verify`` compares the files with the originals' checksums (torchvision's for CIFAR, those of
    the unpacked archives for the MNIST family, ``MNIST_FAMILY_MD5``); ``verify=False`` accepts a
    modified copy: it warns once on stderr, and the caller's config records it. Labels outside
    the classes are refused either way.
    """
    if name not in _CLASS_NAMES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(_CLASS_NAMES)}")
    root, device = Path(root), torch.device(device)
    train = _to_imageset(_open(name, root, True, download, verify), train_limit, device)
    test = _to_imageset(_open(name, root, False, download, verify), test_limit, device)
    num_classes = 100 if name == "cifar100" else 10
    transform: Transform = CifarTransform(device) if name.startswith("cifar") else Identity()
    return Dataset(name, train, test, num_classes, transform)
