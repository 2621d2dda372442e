"""Device-hours of a plan, from times already measured on this kind of work.

Sources, first match wins per item: the stored cells under ``OUT_DIR/cells`` of the same
dataset, scenario and method and the same size (train_limit, train_epochs, relearn): their
``meta.cell_s``, and for models the retrained model's training time each ``retrain`` cell
records (an original: that time scaled by |D| / |D_r|); else ``bench.json`` (in OUT_DIR, then
in the working directory) for the same dataset and train_limit: an epoch's time x epochs for a
model, ``per_seed_s`` plus one epoch for relearning and one evaluation for the retrain gap for a
cell. Times are the device they were measured on; the estimate says which.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import Config
from launch.jobs import CellJob, ModelJob, needs_retrain


@dataclass
class Estimate:
    models_h: float = 0.0
    cells_h: float = 0.0
    source: str = ""
    unknown: list[str] = field(default_factory=list)
    models_unknown: int = 0  # items with no measure: not in models_h / cells_h
    cells_unknown: int = 0
    longest_s: float = 0.0  # the longest single item: one task must run it whole (a requeue starts it again)
    longest: str = ""


def _size(cfg: dict[str, Any] | Config) -> tuple:
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    return get("train_limit"), get("train_epochs")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class Measures:
    def __init__(self, out_dir: Path) -> None:
        self.cells: dict[tuple, list[float]] = defaultdict(list)
        self.retrain: dict[tuple, list[float]] = defaultdict(list)  # seconds per remain sample
        self.devices: set[str] = set()
        for path in sorted((out_dir / "cells").glob("*/*.json")):
            doc = _read(path)
            if not doc or not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("config"), dict):
                continue
            meta, cfg, row = doc["meta"], doc["config"], doc.get("row", {})
            size = _size(cfg)
            if "cell_s" in meta:
                relearn = bool(row.get("relearn"))
                self.cells[(doc["dataset"], doc["scenario"], doc["method"], size, relearn)].append(meta["cell_s"])
                self.devices.add(str(meta.get("device", "?")))
            if doc["method"] == "retrain" and meta.get("remain") and "unlearn_time_s" in row:
                self.retrain[(doc["dataset"], size)].append(row["unlearn_time_s"] / meta["remain"])
        self.bench: dict[str, Any] | None = None
        for candidate in (out_dir / "bench.json", Path("bench.json")):
            doc = _read(candidate)
            if doc and isinstance(doc.get("phases"), dict) and isinstance(doc.get("config"), dict):
                self.bench = doc
                break

    def _bench_for(self, cfg: Config) -> dict[str, Any] | None:
        b = self.bench
        if b and b["config"].get("dataset") == cfg.dataset and b["config"].get("train_limit") == cfg.train_limit:
            return b
        return None

    def model_s(self, job: ModelJob, n_train: int) -> float | None:
        cfg = job.cfg
        per_sample = self.retrain.get((cfg.dataset, _size(cfg)))
        if per_sample:
            return statistics.median(per_sample) * n_train  # training time is linear in the samples
        bench = self._bench_for(cfg)
        if bench:
            return bench["phases"]["train_epoch_s"] * cfg.train_epochs
        return None

    def cell_s(self, job: CellJob) -> float | None:
        cfg, h = job.cfg, job.header
        times = self.cells.get((h["dataset"], h["scenario"], h["method"], _size(cfg), cfg.relearn))
        if times:
            return statistics.median(times)
        bench = self._bench_for(cfg)
        if bench:
            p = bench["phases"]
            return (bench["per_seed_s"] + (p["train_epoch_s"] if cfg.relearn else 0.0)
                    + (p["eval_s"] + p["mia_s"] if needs_retrain(cfg) else 0.0))
        return None


def _n_train(cfg: Config) -> int:
    full = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}[cfg.dataset]
    return min(cfg.train_limit, full) if cfg.train_limit else full


def estimate(models: list[ModelJob], cells: list[CellJob], out_dir: Path) -> Estimate:
    m = Measures(out_dir)
    est = Estimate()
    missing: dict[str, int] = defaultdict(int)
    for job in models:
        cfg = job.cfg
        share = 1.0 if job.kind == "original" else (
            1 - 1 / cfg.num_classes if cfg.scenario == "class" else 1 - cfg.forget_fraction)
        seconds = m.model_s(job, round(_n_train(cfg) * share))
        if seconds is None:
            missing[f"{job.kind} models of {job.cfg.dataset}"] += 1
            est.models_unknown += 1
        else:
            est.models_h += seconds / 3600
            est.longest_s, est.longest = max((est.longest_s, est.longest), (seconds, job.path.name))
    for job in cells:
        seconds = m.cell_s(job)
        if seconds is None:
            missing[f"{job.header['dataset']}-{job.header['scenario']} {job.header['method']} cells"] += 1
            est.cells_unknown += 1
        else:
            est.cells_h += seconds / 3600
            est.longest_s, est.longest = max((est.longest_s, est.longest), (seconds, job.label))
    est.unknown = [f"{n} {what}" for what, n in missing.items()]
    sources = []
    if m.cells:
        sources.append(f"{sum(map(len, m.cells.values()))} stored cells measured on {', '.join(sorted(m.devices))}")
    if m.bench:
        sources.append(f"bench.json on {m.bench.get('device', '?')}")
    est.source = "; ".join(sources) or "no measured times: run bench.py or compute a few cells first"
    return est
