"""The model cache and the atomic, safe file helpers."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from models.cache import cached_model, key_hash
from storage import keep_previous, load_checkpoint, save_checkpoint, write_json

KEY = {"dataset": "toy", "epochs": 1, "seed": 0}


class Trainer:
    """A train callback that counts its calls and sets recognisable weights."""

    def __init__(self, value: float = 1.5) -> None:
        self.calls = 0
        self.value = value

    def __call__(self, model: nn.Module) -> list[float]:
        self.calls += 1
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.copy_(torch.arange(p.numel(), dtype=p.dtype).view_as(p) * self.value + i)
        return [0.5, 0.25]


def fresh(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trains_once_then_loads(tmp_path):
    train, logs = Trainer(), []
    first = fresh(0)
    info = cached_model(first, tmp_path, "orig", KEY, train, {"cfg": 1}, log=logs.append)
    assert info.trained and train.calls == 1
    assert info.path.exists() and info.path.parent == tmp_path
    assert info.path.name == f"orig-{key_hash(KEY)}.pt"
    assert info.losses == [0.5, 0.25]
    second = fresh(1)
    assert not same_weights(first, second)
    info2 = cached_model(second, tmp_path, "orig", dict(KEY), train, {"cfg": 1}, log=logs.append)
    assert not info2.trained
    assert train.calls == 1
    assert info2.path == info.path
    assert info2.losses == [0.5, 0.25]
    assert info2.train_time_s == pytest.approx(info.train_time_s)
    assert same_weights(first, second)
    assert logs == []


def test_training_removes_the_temp_file_a_killed_trainer_left(tmp_path):
    planted = tmp_path / f".orig-{key_hash(KEY)}.pt.killed.tmp"  # the name save_checkpoint's temp file gets
    planted.write_bytes(b"PK\x03\x04 half a zip")
    other = tmp_path / ".other.pt.x.tmp"  # another file's temp: not ours to touch
    other.write_bytes(b"")
    info = cached_model(fresh(), tmp_path, "orig", KEY, Trainer(), {}, log=lambda _: None)
    assert info.trained and not planted.exists() and other.exists()
    assert sorted(os.listdir(tmp_path)) == sorted([info.path.name, info.path.name + ".lock", other.name])


def test_key_order_does_not_matter_but_values_do():
    assert key_hash({"a": 1, "b": 2}) == key_hash({"b": 2, "a": 1})
    assert key_hash({"a": 1, "b": 2}) != key_hash({"a": 1, "b": 3})


def test_other_key_trains_its_own_model(tmp_path):
    train = Trainer()
    a = cached_model(fresh(), tmp_path, "orig", KEY, train, {}, log=lambda _: None)
    b = cached_model(fresh(), tmp_path, "orig", {**KEY, "epochs": 2}, train, {}, log=lambda _: None)
    assert train.calls == 2
    assert a.path != b.path and a.path.exists() and b.path.exists()


def test_corrupt_file_is_reported_and_replaced(tmp_path):
    train, logs = Trainer(), []
    info = cached_model(fresh(), tmp_path, "orig", KEY, train, {}, log=logs.append)
    info.path.write_bytes(b"\x00garbage, not a checkpoint\xff" * 10)
    model = fresh(2)
    info2 = cached_model(model, tmp_path, "orig", KEY, Trainer(), {}, log=logs.append)
    assert info2.trained
    assert len(logs) == 1
    assert info.path.name in logs[0]
    assert "\n" not in logs[0]
    ckpt = load_checkpoint(info.path)  # replaced by a readable one
    assert ckpt["hash"] == key_hash(KEY)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ckpt["model"].items())
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == [info.path.name]  # no temp file


def test_checkpoint_made_for_another_key_is_retrained(tmp_path):
    train, logs = Trainer(), []
    other_key = {**KEY, "seed": 9}
    path = tmp_path / f"orig-{key_hash(KEY)}.pt"
    save_checkpoint(path, {"model": fresh(5).state_dict(), "key": other_key, "hash": key_hash(other_key)})
    model = fresh(2)
    info = cached_model(model, tmp_path, "orig", KEY, train, {}, log=logs.append)
    assert info.trained and train.calls == 1
    assert len(logs) == 1 and path.name in logs[0]
    assert load_checkpoint(path)["key"] == KEY
    expected = fresh(0)
    Trainer()(expected)
    assert same_weights(model, expected)


def test_checkpoint_with_the_right_hash_but_another_key_is_retrained(tmp_path):
    """The stored key itself is compared, not only the file name's hash."""
    train, logs = Trainer(), []
    path = tmp_path / f"orig-{key_hash(KEY)}.pt"
    save_checkpoint(path, {"model": fresh(5).state_dict(), "key": {**KEY, "seed": 9}, "hash": key_hash(KEY)})
    info = cached_model(fresh(2), tmp_path, "orig", KEY, train, {}, log=logs.append)
    assert info.trained and train.calls == 1
    assert len(logs) == 1 and path.name in logs[0]


def test_checkpoint_that_does_not_fit_is_retrained_from_the_initial_weights(tmp_path):
    """A failed partial load must not leak into the retraining."""
    path = tmp_path / f"orig-{key_hash(KEY)}.pt"
    wrong = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5))  # other output size
    save_checkpoint(path, {"model": wrong.state_dict(), "key": KEY, "hash": key_hash(KEY)})
    model, logs = fresh(3), []
    initial = fresh(3)
    seen = []
    cached_model(model, tmp_path, "orig", KEY, lambda m: seen.append(same_weights(m, initial)) or [],
                 {}, log=logs.append)
    assert seen == [True]
    assert len(logs) == 1 and path.name in logs[0]


class Payload:
    """Unpickling this would create a file: a stand-in for arbitrary code."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Payload(str(marker))}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_load_checkpoint_reads_tensors_and_rejects_non_dicts(tmp_path):
    path = tmp_path / "ok.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(3.0)}, "losses": [1.0]})
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["model"]["w"], torch.arange(3.0))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "missing.pt")


def test_write_json_atomic_replace(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with open(path) as old:  # a reader holding the old file keeps seeing all of it
        write_json(path, {"b": [1, 2, 3], "c": "x" * 1000})
        assert json.loads(old.read()) == {"a": 1}
    assert json.loads(path.read_text()) == {"b": [1, 2, 3], "c": "x" * 1000}
    assert os.listdir(path.parent) == ["results.json"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_write_json_of_nan_raises_and_keeps_the_previous_file(tmp_path, bad):
    path = tmp_path / "results.json"
    write_json(path, {"mia": 0.5})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_json(path, {"mia": bad})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["results.json"]


def test_failed_checkpoint_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint(path, {"model": {"w": torch.ones(2)}, "f": lambda: 0})
    assert os.listdir(tmp_path) == ["c.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_keep_previous_renames_under_the_files_own_time_and_never_over_another(tmp_path):
    path = tmp_path / "results.json"
    assert keep_previous(path) is None  # nothing to keep
    names = []
    for text in ("first", "second"):
        path.write_text(text)
        os.utime(path, (0, 86400 + 3661))  # 1970-01-02 01:01:01 UTC, both times
        names.append(keep_previous(path).name)
        assert not path.exists()
    assert names == ["results-19700102T010101Z.json", "results-19700102T010101Z-1.json"]
    assert [(tmp_path / n).read_text() for n in names] == ["first", "second"]


def test_a_checkpoint_changed_in_place_is_retrained_not_loaded(tmp_path):
    """torch.load does not compare the zip's CRC-32s: bytes changed in place (a bad copy, bit rot)
    loaded as other weights without a word."""
    stored = fresh()
    info = cached_model(stored, tmp_path, "orig", KEY, Trainer(), {}, log=lambda _: None)
    content = bytearray(info.path.read_bytes())
    at = bytes(content).index(stored[0].weight.detach().numpy().tobytes())  # the first layer's stored bytes
    content[at + 4:at + 8] = b"\x00\x00\x80\x7f"  # one weight -> inf, same size
    info.path.write_bytes(bytes(content))
    logs = []
    model = fresh(3)
    again = cached_model(model, tmp_path, "orig", KEY, Trainer(), {}, log=logs.append)
    assert again.trained and len(logs) == 1 and "damaged" in logs[0] and "checksum" in logs[0]
    assert torch.isfinite(model[0].weight).all()


def test_a_cache_that_cannot_be_written_keeps_the_trained_model(tmp_path, monkeypatch):
    import errno

    import models.cache as cache

    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cache, "save_checkpoint", disk_full)
    logs = []
    info = cached_model(fresh(), tmp_path, "orig", KEY, Trainer(), {}, log=logs.append)
    assert info.trained and not info.path.exists()
    assert len(logs) == 1 and logs[0].startswith("warning: could not store") and "No space left" in logs[0]


def test_a_read_only_cache_is_read_without_its_lock(tmp_path, monkeypatch):
    from filelock import FileLock

    first = fresh(0)
    cached_model(first, tmp_path, "orig", KEY, Trainer(), {}, log=lambda _: None)

    def read_only(self, *args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(FileLock, "acquire", read_only)
    logs, train = [], Trainer()
    second = fresh(1)
    info = cached_model(second, tmp_path, "orig", KEY, train, {}, log=logs.append)
    assert not info.trained and train.calls == 0 and same_weights(first, second)
    assert logs == [f"note: no lock on {info.path.name} (Read-only file system); reading it without one"]


def test_without_flock_a_model_is_trained_and_stored_but_no_temp_file_is_swept(tmp_path, monkeypatch):
    import errno

    from filelock import FileLock

    def no_flock(self, *args, **kwargs):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(FileLock, "acquire", no_flock)
    path = tmp_path / f"orig-{key_hash(KEY)}.pt"
    live = tmp_path / f".{path.name}.live.tmp"  # another trainer's, being written: not ours to remove
    live.write_bytes(b"partial")
    logs, train = [], Trainer()
    info = cached_model(fresh(), tmp_path, "orig", KEY, train, {}, log=logs.append)
    assert info.path == path and info.trained and train.calls == 1 and path.is_file() and live.is_file()
    assert logs == [f"note: no lock on {path.name} (Function not implemented); training it without one"]


def test_a_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    import storage

    synced = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(storage.os, "fsync", record)
    write_json(tmp_path / "results.json", {"a": 1})
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".results.json."))  # the temp file
    assert synced[1] == str(tmp_path)  # then the folder that holds the rename
