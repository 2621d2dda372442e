"""MNIST-family files on disk: a modified, damaged or partial copy is refused in one line, never read as data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import main
from data import DataError, load_dataset
from data.datasets import MNIST_FAMILY_MD5

FILES = tuple(MNIST_FAMILY_MD5["mnist"])


def _copy(data_root: Path, to: Path, changed: str, change) -> Path:
    """An MNIST folder whose ``changed`` file is a changed copy and the others links to the originals."""
    raw = to / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        if name == changed:
            content = bytearray((data_root / "MNIST" / "raw" / name).read_bytes())
            (raw / name).write_bytes(change(content))
        else:
            (raw / name).symlink_to(data_root / "MNIST" / "raw" / name)
    return to


def _set(offset: int, value: int):
    def change(content: bytearray) -> bytes:
        content[offset] = value
        return bytes(content)
    return change


def test_the_originals_pass_and_their_checksums_are_the_table_s(data_root):
    data = load_dataset("mnist", data_root, download=False, train_limit=10, test_limit=10)
    assert len(data.train) == 10
    assert set(MNIST_FAMILY_MD5) == {"mnist", "fashion_mnist"} and all(len(v) == 4 for v in MNIST_FAMILY_MD5.values())


def test_a_changed_pixel_is_refused_unless_verify_data_is_off(data_root, tmp_path, capsys):
    root = _copy(data_root, tmp_path, "t10k-images-idx3-ubyte", _set(16 + 200, 255))
    with pytest.raises(DataError, match=r"all files are present .* t10k-images-idx3-ubyte differs from the originals"):
        load_dataset("mnist", root, download=False)
    data = load_dataset("mnist", root, download=False, verify=False)
    assert float(data.test.images[0, 0].flatten()[200]) == 1.0
    assert "verify_data=false" in capsys.readouterr().err


def test_a_label_outside_the_classes_is_refused_even_unverified(data_root, tmp_path):
    """It went through to the attacks and raised an IndexError there, after the training."""
    root = _copy(data_root, tmp_path, "t10k-labels-idx1-ubyte", _set(8 + 3, 120))
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        load_dataset("mnist", root, download=False, verify=False)


def test_a_truncated_file_is_damaged_not_missing(data_root, tmp_path, capsys):
    root = _copy(data_root, tmp_path, "train-images-idx3-ubyte", lambda content: bytes(content[:-16]))
    with pytest.raises(DataError, match="are there but cannot be read") as err:
        load_dataset("mnist", root, download=False, verify=False)
    assert "not found" not in str(err.value)
    out = tmp_path / "runs"
    assert main.main([f"--data_root={root}", "--download=false", f"--out_dir={out}", "--seeds=0"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("data error: mnist: all files are present") and "train-images-idx3-ubyte" in line
    assert not out.exists()


def test_a_failed_download_says_why_in_one_line_and_leaves_no_empty_folder(tmp_path, monkeypatch):
    """Offline, torchvision's error was cut at "Error downloading train-images-idx3-ubyte.gz:" and an empty
    MNIST/raw stayed behind, with no word on where the data should come from."""
    from urllib.error import URLError

    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("no network here")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    root = tmp_path / "datasets"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root, download=True)
    message = str(info.value)
    assert "\n" not in message and "download failed" in message and "CAMU_DATA_ROOT" in message
    assert "train-images-idx3-ubyte.gz" in message
    assert not root.exists()  # made by the failed download, removed with it
    import torchvision.datasets.cifar as tv_cifar

    def root_then_offline(url, root, *args, **kwargs):  # torchvision makes root, the archive makes the rest
        Path(root).mkdir(parents=True, exist_ok=True)
        raise URLError("no network here")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", root_then_offline)
    with pytest.raises(DataError, match="download failed"):
        load_dataset("cifar10", tmp_path / "cifar", download=True)
    assert not (tmp_path / "cifar").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(DataError):
        load_dataset("mnist", tmp_path / "kept", download=True)
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "MNIST").exists()


def test_a_missing_file_is_still_named_as_missing(data_root, tmp_path):
    root = _copy(data_root, tmp_path, "", lambda content: content)
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root, download=False)
    assert str(info.value).startswith("mnist: t10k-labels-idx1-ubyte not found in ") and \
        "(the other files are there); download is off; point --data_root" in str(info.value)
    assert "download=True" not in str(info.value)  # torchvision's advice names no key of ours
    shutil.rmtree(root)
    with pytest.raises(DataError, match=r"mnist: files not found in .* \(expected train-images-idx3-ubyte, "):
        load_dataset("mnist", tmp_path / "none", download=False)
