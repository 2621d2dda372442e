"""Trained models cached on disk, keyed by a hash of everything that determines them.

The original model is trained once per (dataset, recipe, training seed) and shared by
every unlearning seed and run. A corrupt or mismatched cache file is reported in one
line and the model is retrained (the file is only a cache; the new one replaces it).
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

from torch import nn

from storage import load_checkpoint, save_checkpoint

CACHE_VERSION = 1  # bump when training code changes what a key produces


def key_hash(key: dict[str, Any]) -> str:
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CacheInfo:
    path: Path
    trained: bool  # False when loaded from the cache
    train_time_s: float  # of the training that produced the file
    losses: list[float]


def cached_model(model: nn.Module, cache_dir: str | Path, prefix: str, key: dict[str, Any],
                 train: Callable[[nn.Module], list[float]], config: dict[str, Any],
                 log: Callable[[str], None] = print) -> CacheInfo:
    """Load ``model``'s weights from the cache, or train it with ``train`` and store it."""
    digest = key_hash(key)
    path = Path(cache_dir) / f"{prefix}-{digest}.pt"
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
            return CacheInfo(path, False, float(ckpt.get("train_time_s", 0.0)), list(ckpt.get("losses", [])))
        except ValueError as exc:
            model.load_state_dict(initial)
            log(f"warning: {exc}; retraining it")
    start = time.perf_counter()
    losses = train(model)
    elapsed = time.perf_counter() - start
    save_checkpoint(path, {"model": model.state_dict(), "key": key, "hash": digest,
                           "train_time_s": elapsed, "losses": losses, "config": config})
    return CacheInfo(path, True, elapsed, losses)
