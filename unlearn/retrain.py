"""Retrain: the exact-unlearning oracle, a fresh model trained on D_r with the original recipe.

Cached like the original model, keyed by the recipe and a digest of D_r, so the same
split (the same seed) never trains twice, whichever method asked for it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from config import Config
from data.datasets import Dataset
from data.splits import Split
from models import build_model
from models.cache import CacheInfo, cache_path, cached_model
from models.original import original_key
from models.runtime import Runtime
from models.train import train_classifier
from unlearn.base import UnlearnTask


def remain_digest(split: Split) -> str:
    remain = np.ascontiguousarray(split.remain.cpu().numpy().astype(np.int64))
    return hashlib.sha256(remain.tobytes()).hexdigest()[:16]


def retrain_key(cfg: Config, runtime: Runtime, split: Split) -> dict[str, Any]:
    """Everything that determines the retrained model: the original's recipe and D_r."""
    return {**original_key(cfg, runtime), "remain": remain_digest(split)}


def retrained_path(cfg: Config, device: torch.device | str, split: Split) -> Path:
    """The checkpoint ``retrained_model`` reads or writes for ``split`` on ``device``."""
    return cache_path(Path(cfg.out_dir) / "checkpoints", f"retrain-{cfg.dataset}",
                      retrain_key(cfg, Runtime.from_config(cfg, device), split))


def retrained_model(cfg: Config, data: Dataset, split: Split) -> tuple[nn.Module, CacheInfo]:
    """The cached model trained from scratch on D_r (trained first when there is none)."""
    device = data.train.labels.device
    runtime = Runtime.from_config(cfg, device)
    torch.manual_seed(cfg.train_seed)
    model = runtime.prepare(build_model(cfg.model_name, data.num_classes, cfg.pretrained).to(device))
    key = retrain_key(cfg, runtime, split)

    def train(m: nn.Module) -> list[float]:
        return train_classifier(m, data, split.remain, cfg.train_epochs, cfg.train_lr, cfg.weight_decay,
                                cfg.batch_size, cfg.train_seed, desc="retrain", runtime=runtime)

    info = cached_model(model, Path(cfg.out_dir) / "checkpoints", f"retrain-{cfg.dataset}", key, train,
                        cfg.to_dict())
    model.eval()
    return model, info


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Replace ``model``'s weights by the retrained model's.

    ``unlearn_time_s`` in the traces is the time of the training that produced the
    (possibly cached) model, so a cache hit does not report retraining as free.
    """
    retrained, info = retrained_model(cfg, task.data, task.split)
    model.load_state_dict(retrained.state_dict())
    return {"checkpoint": str(info.path), "trained_now": info.trained, "losses": info.losses,
            "unlearn_time_s": info.train_time_s}
