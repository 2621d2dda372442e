"""Files written atomically (temp file in the same folder, then rename) and read safely.

A run killed mid-write leaves the previous file or none, never half of one; checkpoints
are read with ``weights_only=True`` so a file cannot run code when loaded.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_affixes(path: Path) -> tuple[str, str]:
    """The prefix and suffix of the temp file ``_atomic`` writes ``path`` through (hidden, beside it)."""
    return f".{path.name}.", ".tmp"


def remove_stale_temps(path: str | Path) -> int:
    """Remove the temp files a writer of ``path`` killed before its rename left beside it; returns how many.

    Call it only while holding the lock every writer of ``path`` takes (a cell's or a checkpoint's),
    so no live writer's temp file can be among them.
    """
    path = Path(path)
    prefix, suffix = _temp_affixes(path)
    stale = list(path.parent.glob(f"{prefix}*{suffix}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def _atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temp_affixes(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make results private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """fsync the folder, so that a power loss after the rename keeps it (the file's bytes already are)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a filesystem that cannot sync a folder: the rename stands all the same
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically."""
    return _atomic(path, lambda f: f.write(data))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return write_bytes(path, text.encode())


def keep_previous(path: str | Path) -> Path | None:
    """Rename an earlier file at ``path`` to NAME-TIME.SUFFIX (its own UTC modification time); the new name.

    Two runs under one run name (``python main.py --seeds=0``, then ``--seeds=1``) would otherwise
    leave only the second's results.json; renaming in the same folder is atomic and keeps both.
    """
    path = Path(path)
    if not path.exists():
        return None
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    kept, n = path.with_name(f"{path.stem}-{stamp}{path.suffix}"), 1
    while kept.exists():
        kept, n = path.with_name(f"{path.stem}-{stamp}-{n}{path.suffix}"), n + 1
    path.rename(kept)
    return kept


def keep_with(kept: Path, files: list[Path]) -> list[Path]:
    """Rename ``files`` (an earlier run's, beside ``kept``) under the time ``keep_previous`` gave ``kept``:
    ``split-seed0.npz`` beside ``results-STAMP.json`` becomes ``split-seed0-STAMP.npz``; the new names."""
    stamp = kept.stem.split("-", 1)[1]
    moved = []
    for path in files:
        target = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
        if path.exists() and not target.exists():
            path.rename(target)
            moved.append(target)
    return moved


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """``torch.save`` atomically."""
    return _atomic(path, lambda f: torch.save(obj, f))


def damaged_entry(path: str | Path) -> str | None:
    """The first entry of a ``torch.save`` zip whose CRC-32 does not match its bytes, or None.

    ``torch.load`` does not compare them, so bytes changed in place (a bad copy, ``rsync
    --inplace``, bit rot) loaded as other weights without a word; this reads the file once
    (milliseconds for these models).
    """
    with zipfile.ZipFile(path) as archive:
        return archive.testzip()


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a file whose checksums hold; any failure to read raises
    ValueError with the reason."""
    try:
        bad = damaged_entry(path)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path} is not a readable checkpoint ({str(exc)[:200] or type(exc).__name__})") from None
    if bad is not None:
        raise ValueError(f"{path} is damaged: {bad} does not match its checksum")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, disallowed global, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a checkpoint dictionary")
    return obj
