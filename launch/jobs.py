"""The two stages' work items, and which shared models a list of cells needs (stage 1).

A cell needs its scenario's original model and, when it compares to retraining (or is the
``retrain`` method), the model retrained on its split's D_r. Cells that share a recipe share
an original; cells whose splits have the same D_r (class removal: every seed) share a
retrained model. Models are told apart by their checkpoint path, the hash of everything that
determines their weights, computed for the device the workers will use. A cell another run
wrote meanwhile is compared with the job's settings here too (``cell_clash``), by the rule
``reproduce.py`` applies to stored cells before a sweep starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from config import Config, key_owner, scenario_settings, shown_changes
from data import load_dataset
from main import split_for_seed
from models.original import original_path
from unlearn import SEARCH_SPACES
from unlearn.retrain import retrained_path


def file_state(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of ``path``, or None when it is missing: a worker that finds it changed skips the item."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def own_changes(stored: dict[str, Any], cfg: Config, method: str) -> list[str]:
    """The keys of ``method``'s own that a stored cell's config has with other values than ``cfg`` (tuned keys
    aside: the tuned file's hash decides whether a tuned cell is computed again)."""
    tuned_keys = SEARCH_SPACES.get(method, {}) if cfg.tuned else {}
    current = cfg.to_dict()
    return shown_changes(stored, current, {k for k in current if key_owner(k) == method and k not in tuned_keys})


def cell_clash(stored: dict[str, Any], cfg: Config, method: str) -> list[str]:
    """What ``reproduce.check_stored_settings`` would refuse in a stored cell's config beside ``cfg``: the
    scenario's shared keys and the method's own (for a cell another run wrote while this one ran)."""
    shared = scenario_settings(cfg.to_dict())
    return shown_changes(scenario_settings(stored), shared, shared) + own_changes(stored, cfg, method)


@dataclass(frozen=True)
class CellJob:
    """One cell to compute: the document's header (dataset, scenario, method, seed), its config, its file."""

    header: dict[str, Any]
    cfg: Config
    path: Path
    state: tuple[int, int] | None = None  # the file when the plan was made

    @property
    def seed(self) -> int:
        return int(self.header["seed"])

    @property
    def label(self) -> str:
        h = self.header
        return f"{h['dataset']}-{h['scenario']} {h['method']} seed {h['seed']}"


@dataclass(frozen=True)
class ModelJob:
    """One shared model to train: ``original`` (of ``cfg``) or ``retrain`` (on the split of ``seed``)."""

    kind: str
    cfg: Config
    seed: int
    path: Path
    cells: list[str] = field(default_factory=list, compare=False)  # which cells need it, for the plan

    @property
    def label(self) -> str:
        return self.path.stem


def needs_retrain(cfg: Config) -> bool:
    return cfg.compare_retrain or cfg.method == "retrain"


def model_jobs(cells: list[CellJob], device: torch.device | str, download: bool = True) -> list[ModelJob]:
    """The distinct models ``cells`` need, originals first; each listed once, stored or not.

    Reads each dataset's labels (on the CPU) to know the splits' D_r.
    """
    found: dict[Path, ModelJob] = {}
    labels: dict[tuple, torch.Tensor] = {}
    for cell in cells:
        cfg = cell.cfg
        path = original_path(cfg, device)
        found.setdefault(path, ModelJob("original", cfg, cfg.train_seed, path)).cells.append(cell.label)
    for cell in cells:
        cfg = cell.cfg
        if not needs_retrain(cfg):
            continue
        data_key = (cfg.dataset, cfg.data_root, cfg.train_limit)
        if data_key not in labels:
            data = load_dataset(cfg.dataset, cfg.data_root, download and cfg.download, "cpu", cfg.train_limit, 1,
                                verify=cfg.verify_data)
            labels[data_key] = data.train.labels
        path = retrained_path(cfg, device, split_for_seed(cfg, labels[data_key], cell.seed))
        found.setdefault(path, ModelJob("retrain", cfg, cell.seed, path)).cells.append(cell.label)
    return list(found.values())


def worker_device(cfg: Config, launcher: str, slurm: Config) -> torch.device:
    """The device the workers will resolve ``cfg.device`` to (a SLURM GPU job: cuda, wherever we plan)."""
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if launcher == "submitit" and slurm.submitit_cluster == "slurm":
        return torch.device("cuda" if slurm.slurm_gpus_per_task > 0 else "cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
