"""Train (or load) the original model, unlearn with each seed, evaluate, report.

    python main.py [configs/NAME.yaml] [--key=value ...]

Reads top to bottom: config, device, data, original model, then per seed: split,
unlearning (timed), evaluation; results.json is rewritten after every seed so a killed
run keeps the seeds it finished.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch import nn
from tqdm import tqdm

from concepts import ConceptError
from config import Config, ConfigError, load_config
from data import DataError, Dataset, Split, load_dataset, make_split
from data.rng import generator
from eval.evaluate import evaluate
from eval.gaps import avg_gap, gaps
from eval.relearn import relearn
from models import DownloadError
from models.cache import CacheBusy
from models.original import original_model
from models.runtime import Runtime, backend_info, configure_determinism
from progress import Interrupted, configure_progress, interrupted
from report import class_only, format_table, git_commit, results_document
from storage import keep_previous, keep_with, remove_stale_temps, write_bytes, write_json
from unlearn import PREFLIGHT, ROW_METRICS, UnlearnTask, get_method
from unlearn.retrain import retrained_model


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def split_for_seed(cfg: Config, labels: torch.Tensor, seed: int) -> Split:
    return make_split(labels, cfg.scenario, cfg.forget_class, cfg.forget_fraction, cfg.forget_repeat,
                      generator(seed, "split"))


def check_splits(cfg: Config, labels: torch.Tensor, seeds: list[int] | tuple[int, ...]) -> None:
    """Draw each seed's split once (milliseconds), so that a split the data cannot give is a one-line
    DataError before the original model's training, not after it."""
    for seed in seeds:
        split_for_seed(cfg, labels, seed)


def save_split(path: Path, split: Split) -> None:
    """The split's indices beside the results, so every number can be traced to its samples."""
    buf = io.BytesIO()
    np.savez_compressed(buf, forget=split.forget.cpu().numpy(), remain=split.remain.cpu().numpy(),
                        sample=split.sample.cpu().numpy())
    write_bytes(path, buf.getvalue())


def compare_to_retrain(metrics: dict[str, float], cfg: Config, data: Any, split: Split, seed: int,
                       references: dict[int, dict[str, float]] | None = None) -> dict[str, Any]:
    """The retrained model's metrics on the same split, each metric's absolute gap, and their average.

    ``references`` (seed -> the retrained model's metrics) is filled on first use and read after:
    tune.py runs hundreds of trials on the same splits, and evaluating the retrained model again
    for each (load, predict, fit the attacks) would cost as much as a cheap method's unlearning.
    """
    if cfg.method == "retrain":
        reference = dict(metrics)
    elif references is not None and seed in references:
        reference = dict(references[seed])
    else:
        retrained, _ = retrained_model(cfg, data, split)
        reference = evaluate(retrained, data, split, cfg, seed)
        if references is not None:
            references[seed] = dict(reference)
    gap = gaps(metrics, reference)
    return {"retrain": reference, "gap": gap, "avg_gap": avg_gap(gap)}


def run_seed(cfg: Config, data: Dataset, original: nn.Module, seed: int,
             references: dict[int, dict[str, float]] | None = None
             ) -> tuple[dict[str, Any], dict[str, Any], Split]:
    """One seed: split, unlearn a copy of ``original`` (timed), evaluate, compare to retraining.

    ``references``: the retrained model's metrics per seed, kept across calls (see compare_to_retrain).

    Returns the results row (metrics, time, retrain gaps, relearning series when asked),
    the seed's metadata (sizes, phase times, method traces) and the split.
    """
    device = data.train.labels.device
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    split = split_for_seed(cfg, data.train.labels, seed)
    split_s = time.perf_counter() - t0
    runtime = Runtime.from_config(cfg, device)
    warm_up_s = None
    if runtime.needs_warm_up(device):  # the process's first kernels / a compile: not the method's time
        t0 = time.perf_counter()
        x = data.inputs(data.train.images[:cfg.batch_size], train=True, gen=generator(seed, "warm-up/augment"))
        runtime.warm_up(original, x)
        sync(device)
        warm_up_s = time.perf_counter() - t0
    model = runtime.copy(original)  # compiled again when compile is on
    sync(device)
    t0 = time.perf_counter()
    task = UnlearnTask(data, split, seed)
    traces = get_method(cfg.method)(model, original, task, cfg)
    sync(device)
    unlearn_s = time.perf_counter() - t0
    unlearn_s = float(traces.pop("unlearn_time_s", unlearn_s))  # retrain: the time of its (cached) training
    # a diverged model's metrics are NaN where its logits are (eval/); tune.py fails such trials on this flag
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    weights_finite = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True
    t0 = time.perf_counter()
    metrics = evaluate(model, data, split, cfg, seed)
    eval_s = time.perf_counter() - t0
    row: dict[str, Any] = {"seed": seed, **metrics, "unlearn_time_s": unlearn_s}
    t0 = time.perf_counter()
    if cfg.compare_retrain:
        row.update(compare_to_retrain(metrics, cfg, data, split, seed, references))
    compare_s = time.perf_counter() - t0
    state = traces.pop("_state", None)  # what a method's own row metrics need (never serialised)
    if cfg.method in ROW_METRICS:
        row.update(ROW_METRICS[cfg.method](model, original, task, cfg, state))
    if cfg.relearn:
        row["relearn"] = relearn(model, data, split, cfg, seed)
    seed_meta = {"seed": seed, "split_s": split_s, "eval_s": eval_s, "retrain_compare_s": compare_s,
                 "forget": len(split.forget), "remain": len(split.remain), "sample": len(split.sample),
                 "weights_finite": weights_finite, "traces": traces,
                 **({} if warm_up_s is None else {"warm_up_s": warm_up_s})}
    return row, seed_meta, split


def run(cfg: Config, log: Any = print) -> dict[str, Any]:
    """Every seed of ``cfg``; returns the results document (also written to results.json)."""
    configure_determinism(cfg.deterministic)  # before the first CUDA call
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    started = time.perf_counter()
    refuse_busy(cfg.run_dir)
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.download, device, cfg.train_limit, cfg.test_limit,
                        verify=cfg.verify_data)
    log(f"{cfg.dataset}: {len(data.train)} training and {len(data.test)} test samples on {device}")
    check_splits(cfg, data.train.labels, cfg.seeds)
    if check := PREFLIGHT.get(cfg.method):
        check(cfg)  # e.g. the clip bank's weights, before the original's training (an error writes nothing)
    make_folder(Path(cfg.out_dir), "out_dir")  # before the training (the checkpoint cache makes it anyway)
    original, info = original_model(cfg, data)
    how = "trained" if info.trained else "loaded"
    stored = "" if info.path.exists() else " (not stored)"
    log(f"original model {how}: {info.path}{stored} ({'training took' if info.trained else 'trained in'} "
        f"{info.train_time_s:.1f} s)")
    meta: dict[str, Any] = {
        "git_commit": git_commit(), "device": str(device), "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "runtime": dataclasses.asdict(Runtime.from_config(cfg, device)), **backend_info(device),
        "original": {"path": str(info.path), "trained_now": info.trained, "train_time_s": info.train_time_s,
                     "trained_on": info.trained_on},
        "per_seed": [], "complete": False,
    }
    rows: list[dict[str, Any]] = []
    results_path = cfg.run_dir / "results.json"
    lock = run_lock(cfg.run_dir)
    take(lock, cfg.run_dir)
    try:
        remove_stale_temps(results_path)  # a killed run's; we hold the run's lock
        for seed in tqdm(cfg.seeds, desc="seeds"):
            row, seed_meta, split = run_seed(cfg, data, original, seed)
            rows.append(row)
            meta["per_seed"].append(seed_meta)
            meta["elapsed_s"] = time.perf_counter() - started
            meta["complete"] = len(rows) == len(cfg.seeds)
            if len(rows) == 1 and (kept := keep_previous(results_path)):  # its splits go with it
                splits = keep_with(kept, sorted(p for p in cfg.run_dir.glob("split-seed*.npz")
                                                if re.fullmatch(r"split-seed\d+\.npz", p.name)))
                tqdm.write(f"the earlier results.json of {cfg.run_name} is kept as {kept.name}"
                           + (f", its splits as {splits[0].name} ..." if splits else ""))
            save_split(cfg.run_dir / f"split-seed{seed}.npz", split)
            write_json(results_path, results_document(cfg, rows, meta))
            shown = {k: v for k, v in row.items() if isinstance(v, float) and not class_only(k, cfg.scenario)}
            tqdm.write(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    except KeyboardInterrupt:
        raise Interrupted(f"{len(rows)} of {len(cfg.seeds)} seeds finished"
                          + (f", in {results_path} (complete: false)" if rows else "; no results written")) from None
    finally:
        lock.release()
    log(format_table(rows, cfg.scenario))
    return results_document(cfg, rows, meta)


class RunBusy(RuntimeError):
    """Another live process is running under the same run folder (its results.json would be lost)."""


class RunFolderError(RuntimeError):
    """The run folder cannot be made (a path config's check, which creates nothing, cannot judge)."""


RUN_LOCK_NAME = ".results.json.lock"  # in the run folder, beside results.json


def take(lock: FileLock, run_dir: Path) -> None:
    """Acquire a run folder's lock at once, or RunBusy naming the holder's lock file."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunBusy(f"another run is writing {run_dir} (it holds {lock.lock_file}): wait for it to end, "
                      "or give this one another --run_name") from None


def refuse_busy(run_dir: Path) -> None:
    """RunBusy now when a live run holds ``run_dir``: found before the data and the original model rather
    than after them. A run makes its folder and lock file only once its original model is ready (an early
    failure leaves no folder), so without the file there is no holder; the lock is taken for good then."""
    if (run_dir / RUN_LOCK_NAME).is_file():
        lock = run_lock(run_dir)
        take(lock, run_dir)
        lock.release()


def make_folder(path: Path, what: str = "the run folder") -> None:
    """``path`` made (with its parents), or RunFolderError in one line: under /proc, say, config's
    check (which creates nothing) passes and mkdir fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create {what} {path} ({exc.strerror or exc})") from None


def run_lock(run_dir: Path) -> FileLock:
    """The lock a run holds on its folder while it writes results: two runs under one ``run_name`` at
    once renamed each other's results.json away (``keep_previous``) and overwrote the rest."""
    make_folder(run_dir)
    return FileLock(run_dir / RUN_LOCK_NAME, is_singleton=True, fallback_to_soft=False)


# A write that failed for want of room or rights: said in one line, not as a traceback.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# A filesystem without flock (some network mounts): run folders, cells, checkpoints and studies are locked.
LOCK_ERRNOS = (errno.ENOSYS, errno.ENOLCK)


def one_line_errors(work: Callable[[], int], kept: str) -> int:
    """``work()``'s exit status, or 2 with one line for a setting found wrong only during the work, 1
    with one line for missing data, a missing optional package or weights, a busy run folder or
    checkpoint, a full or read-only disk, a filesystem without file locks, or 130 with one line for a
    Ctrl-C (the work's own account of what it kept, else ``kept``). main.py, tune.py, reproduce.py
    and bench.py end their work through it."""
    try:
        return work()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return 1
    except (ConceptError, DownloadError, RunBusy, RunFolderError, CacheBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno in LOCK_ERRNOS:
            print(f"error: no file lock here ({exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}); "
                  "runs lock their folders and models: use an out_dir on a filesystem with flock", file=sys.stderr)
            return 1
        if exc.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {exc.strerror}: {exc.filename or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return interrupted(exc, kept)


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(argv)
    configure_progress()

    def work() -> int:
        run(cfg)
        print(cfg.run_dir / "results.json")
        return 0

    return one_line_errors(work, "before the first seed; cached models are only ever written whole")


if __name__ == "__main__":
    raise SystemExit(main())
