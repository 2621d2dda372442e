"""Trained models cached on disk, keyed by a hash of everything that determines them.

The original model is trained once per (dataset, recipe, training seed) and shared by
every unlearning seed and run. A corrupt, damaged (checksums) or mismatched cache file is
reported in one line and the model is retrained (the file is only a cache; the new one
replaces it); a cache that cannot be written (disk full, read-only) is said in one line and
the run goes on with the model in memory.

Several processes (local workers, SLURM jobs on a shared filesystem) may ask for the same
model at once, so every read and write of a key happens under that key's file lock
(``filelock.FileLock``, an OS ``flock`` on ``NAME.pt.lock``): the first process trains, the
others wait and then load its file. The kernel drops an ``flock`` when its holder's file
descriptor closes, which includes the process dying (killed, OOM, node reboot on NFS once the
server's lease expires), so the lock of a dead job never blocks anyone; the ``.lock`` file
left behind is inert. No existence lock stands in where ``flock`` is missing (a dead job would
hold it forever): a cache whose lock cannot be taken (a read-only shared copy, a filesystem
without ``flock``) is read without one, and a model it lacks is trained and stored without one
(whole files only, by rename), without sweeping temp files, which may be a live trainer's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from torch import nn

from models.runtime import cpu_info, device_name
from storage import load_checkpoint, remove_stale_temps, save_checkpoint

CACHE_VERSION = 1  # bump when training code changes what a key produces


def key_hash(key: dict[str, Any]) -> str:
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | Path, prefix: str, key: dict[str, Any]) -> Path:
    """Where the model of ``key`` is (or will be) stored."""
    return Path(cache_dir) / f"{prefix}-{key_hash(key)}.pt"


def cache_lock(path: str | Path) -> FileLock:
    """The lock guarding checkpoint ``path``: one instance per path in a process, so it is reentrant."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{path}.lock", is_singleton=True, fallback_to_soft=False)


class CacheBusy(TimeoutError):
    """Another live process held a checkpoint's lock for longer than ``lock_timeout_min``."""


def hold(lock: FileLock, what: str, timeout_s: float = 0.0, log: Callable[[str], None] = print) -> None:
    """Acquire ``lock``, saying once that we wait and then every few minutes; ``timeout_s`` <= 0: no limit."""
    try:
        lock.acquire(timeout=0)
        return
    except Timeout:
        pass
    log(f"waiting for {what}: another process holds {lock.lock_file}")
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        wait = 300.0 if timeout_s <= 0 else max(0.0, min(300.0, timeout_s - elapsed))
        try:
            lock.acquire(timeout=wait, poll_interval=0.2)
            return
        except Timeout:
            elapsed = time.monotonic() - start
            if timeout_s > 0 and elapsed >= timeout_s:
                raise CacheBusy(f"{what}: {lock.lock_file} still held after {elapsed / 60:.1f} min "
                                "(lock_timeout_min)") from None
            log(f"still waiting for {what} ({elapsed / 60:.0f} min)")


@dataclass
class CacheInfo:
    path: Path
    trained: bool  # False when loaded from the cache
    train_time_s: float  # of the training that produced the file
    losses: list[float]
    trained_on: str = ""  # the device name it was trained on ("" in files from before it was recorded)


def other_cpu_kernels(trained_cpu: Any) -> bool:
    """Whether a checkpoint's recorded CPU picks other kernels than this one (files without it: unknown, no)."""
    if not isinstance(trained_cpu, dict):
        return False
    here = cpu_info()
    return any(trained_cpu.get(k) != here[k] for k in ("cpu_capability", "cpu_bf16"))


def cached_model(model: nn.Module, cache_dir: str | Path, prefix: str, key: dict[str, Any],
                 train: Callable[[nn.Module], list[float]], config: dict[str, Any],
                 log: Callable[[str], None] = print) -> CacheInfo:
    """Load ``model``'s weights from the cache, or train it with ``train`` and store it."""
    digest = key_hash(key)
    path = cache_path(cache_dir, prefix, key)
    try:
        lock = cache_lock(path)
        hold(lock, path.name, 60.0 * float(config.get("lock_timeout_min", 0.0) or 0.0), log)
    except CacheBusy:  # a TimeoutError, so an OSError: it is no read-only cache, and the holder is alive
        raise
    except OSError as exc:  # a read-only cache (a shared copy): files are only ever replaced whole
        log(f"note: no lock on {path.name} ({exc.strerror or exc}); "
            f"{'reading' if path.exists() else 'training'} it without one")
        return _load_or_train(model, path, digest, key, train, config, log, locked=False)
    try:
        return _load_or_train(model, path, digest, key, train, config, log, locked=True)
    finally:
        lock.release()


def _load_or_train(model: nn.Module, path: Path, digest: str, key: dict[str, Any],
                   train: Callable[[nn.Module], list[float]], config: dict[str, Any],
                   log: Callable[[str], None], locked: bool) -> CacheInfo:
    if path.exists():
        initial = copy.deepcopy(model.state_dict())  # a failed partial load must not leak into retraining
        try:
            ckpt = load_checkpoint(path, device=next(model.parameters()).device)
            if ckpt.get("hash") != digest or ckpt.get("key") != key:
                raise ValueError(f"{path} was made for another key ({ckpt.get('key')})")
            try:
                model.load_state_dict(ckpt["model"], strict=True)
            except (KeyError, RuntimeError) as exc:
                raise ValueError(f"{path} does not fit the model ({str(exc).splitlines()[0][:200]})") from None
            trained_on = str(ckpt.get("trained_on", ""))
            here = device_name(next(model.parameters()).device)
            if trained_on and trained_on != here:
                log(f"note: {path.name} was trained on {trained_on}; reusing it on {here}")
            elif here == "cpu" and other_cpu_kernels(ckpt.get("trained_cpu")):
                log(f"note: {path.name} was trained on another kind of CPU ({ckpt['trained_cpu'].get('cpu')}, "
                    f"bf16 path {ckpt['trained_cpu'].get('cpu_bf16')}); reusing it, but training it here would give "
                    "other weights (docs/reproduce.md)")
            elif here == "cpu" and ckpt.get("trained_threads") not in (None, torch.get_num_threads()):
                log(f"note: {path.name} was trained on {ckpt['trained_threads']} threads, this run has "
                    f"{torch.get_num_threads()}; reusing it, but training it here would give weights other at the "
                    "rounding level (num_threads, docs/fidelity.md)")
            return CacheInfo(path, False, float(ckpt.get("train_time_s", 0.0)), list(ckpt.get("losses", [])),
                             trained_on)
        except ValueError as exc:
            model.load_state_dict(initial)
            log(f"warning: {exc}; retraining it")
    start = time.perf_counter()
    losses = train(model)
    elapsed = time.perf_counter() - start
    trained_on = device_name(next(model.parameters()).device)
    try:
        if locked:  # a killed trainer's; under the checkpoint's lock no live writer's can be among them
            remove_stale_temps(path)
        save_checkpoint(path, {"model": model.state_dict(), "key": key, "hash": digest, "train_time_s": elapsed,
                               "losses": losses, "config": config, "trained_on": trained_on,
                               "trained_cpu": cpu_info(), "trained_threads": torch.get_num_threads()})
    except OSError as exc:  # disk full, read-only: the file is only a cache, the trained model is not lost
        log(f"warning: could not store {path.name} ({exc.strerror or exc}); going on with the model trained now")
    return CacheInfo(path, True, elapsed, losses, trained_on)
