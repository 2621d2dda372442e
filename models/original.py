"""The original model: trained on the whole training set with the release's recipe, cached."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from config import Config
from data.datasets import Dataset
from models import build_model
from models.cache import CacheInfo, cache_path, cached_model
from models.runtime import Runtime
from models.train import train_classifier


def original_key(cfg: Config, runtime: Runtime) -> dict:
    """Everything that determines the original model's weights."""
    return {"dataset": cfg.dataset, "model": cfg.model_name, "epochs": cfg.train_epochs, "lr": cfg.train_lr,
            "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size, "seed": cfg.train_seed,
            "train_limit": cfg.train_limit, "bf16": runtime.bf16, "channels_last": runtime.channels_last,
            "fused_adam": runtime.fused_adam, **({"compile": runtime.compile} if runtime.compile != "off" else {}),
            **({"pretrained": True} if cfg.pretrained else {}),
            # unchecked files are never shared with checked files' models, nor with another folder's unchecked ones
            **({"verify_data": False, "data_root": str(Path(cfg.data_root).resolve())} if not cfg.verify_data else {})}


def original_model(cfg: Config, data: Dataset) -> tuple[nn.Module, CacheInfo]:
    """The cached original model for ``cfg``, trained first when there is none."""
    device = data.train.labels.device
    torch.manual_seed(cfg.train_seed)  # the initialisation is part of the key
    runtime = Runtime.from_config(cfg, device)
    model = runtime.prepare(build_model(cfg.model_name, data.num_classes, cfg.pretrained).to(device))
    everything = torch.arange(len(data.train), device=device)

    def train(m: nn.Module) -> list[float]:
        return train_classifier(m, data, everything, cfg.train_epochs, cfg.train_lr, cfg.weight_decay,
                                cfg.batch_size, cfg.train_seed, desc="original", runtime=runtime)

    info = cached_model(model, Path(cfg.out_dir) / "checkpoints", f"original-{cfg.dataset}",
                        original_key(cfg, runtime), train, cfg.to_dict())
    model.eval()
    return model, info


def original_path(cfg: Config, device: torch.device | str) -> Path:
    """The checkpoint ``original_model`` reads or writes for ``cfg`` on ``device``."""
    return cache_path(Path(cfg.out_dir) / "checkpoints", f"original-{cfg.dataset}",
                      original_key(cfg, Runtime.from_config(cfg, device)))
