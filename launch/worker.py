"""One worker: goes through a stage's items, claims each free one by its lock, computes it.

The lock is taken without waiting: an item held by another worker is left to it (this worker
takes the next one), and an item whose file changed since the plan was made was finished by
someone else. A cell's lock is ``.NAME.json.lock`` beside it; a model's is its checkpoint's
cache lock, which ``cached_model`` takes again (reentrantly) around the training. The same
function runs in this process, in local worker processes and in SLURM array tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import submitit
import torch
from filelock import FileLock, Timeout
from tqdm import tqdm

from concepts import ConceptError
from config import Config, ConfigError
from data import DataError, Dataset, load_dataset
from launch.jobs import CellJob, ModelJob, cell_clash, file_state
from main import resolve_device, run_seed, split_for_seed
from models.cache import cache_lock
from models.original import original_key, original_model
from models.resnet import DownloadError
from models.runtime import Runtime, backend_info, configure_determinism
from progress import configure_progress
from report import git_commit, json_safe
from storage import remove_stale_temps, write_json
from unlearn.retrain import retrained_model

Job = CellJob | ModelJob


def cell_lock(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.parent / f".{path.name}.lock", is_singleton=True, fallback_to_soft=False)


def job_lock(job: Job) -> FileLock:
    return cache_lock(job.path) if isinstance(job, ModelJob) else cell_lock(job.path)


def failure_marker(job: Job) -> Path:
    """``.NAME.failed`` beside the item's file: which launch saw the item fail, and how (one line)."""
    return job.path.parent / f".{job.path.name}.failed"


def launch_marker(job: Job, launch: str) -> dict | None:
    """This launch's failure marker of ``job`` (``failure``: the line; ``worker``: who failed it), or None."""
    try:
        marker = json.loads(failure_marker(job).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and launch and marker.get("launch") == launch else None


def failed_in(job: Job, launch: str) -> str | None:
    """The failure line this launch's marker holds for ``job``, or None (no marker, or another launch's)."""
    marker = launch_marker(job, launch)
    return None if marker is None else marker.get("failure")


def finished_elsewhere(job: Job) -> bool:
    """A model whose checkpoint now exists, or a cell whose file changed since the plan."""
    if isinstance(job, ModelJob):
        return job.path.exists()
    return file_state(job.path) != job.state


def other_settings(job: Job) -> str | None:
    """For a cell another process wrote since the plan: the keys its stored config has with other values than
    this job's (a second sweep with other settings into the same folder, started before the first wrote it),
    as one failure line; None when they agree or the file cannot be read (it is then left as it is)."""
    if not isinstance(job, CellJob):
        return None
    try:
        stored = json.loads(job.path.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(stored, dict):
        return None
    changed = cell_clash(stored, job.cfg, str(job.header["method"]))
    return (f"{job.label}: written meanwhile by a run with other settings ({', '.join(changed[:4])}); "
            f"left as it is: use another out_dir for these settings") if changed else None


class Resources:
    """What one worker keeps between items: one dataset in memory and its originals."""

    def __init__(self) -> None:
        self.data_key: tuple | None = None
        self.data: Dataset | None = None
        self.originals: dict[str, torch.nn.Module] = {}
        self.commit = git_commit()

    def dataset(self, cfg: Config) -> Dataset:
        configure_determinism(cfg.deterministic)  # before the first CUDA call of this process
        device = resolve_device(cfg.device)
        key = (cfg.dataset, cfg.data_root, str(device), cfg.train_limit, cfg.test_limit, cfg.verify_data)
        if key != self.data_key:
            self.data, self.data_key, self.originals = None, None, {}  # one dataset in memory at a time
            self.data = load_dataset(cfg.dataset, cfg.data_root, cfg.download, device, cfg.train_limit,
                                     cfg.test_limit, verify=cfg.verify_data)
            self.data_key = key
        assert self.data is not None
        return self.data

    def original(self, cfg: Config, data: Dataset) -> torch.nn.Module:
        key = json.dumps(original_key(cfg, Runtime.from_config(cfg, data.train.labels.device)), sort_keys=True)
        if key not in self.originals:
            self.originals[key] = original_model(cfg, data)[0]
        return self.originals[key]


def use_threads(cfg: Config) -> None:
    """``num_threads`` for this item. Both stages need it: in this process nothing else sets it, and
    torch's default (every core) in several runs sharing the cores oversubscribes them (measured on
    2 cores: a retrained MNIST model's epoch took 7 s alone and 1-3 min beside a second sweep)."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)


def train_model(job: ModelJob, res: Resources) -> None:
    cfg = job.cfg
    use_threads(cfg)
    data = res.dataset(cfg)
    if job.kind == "original":
        _, info = original_model(cfg, data)
    else:
        _, info = retrained_model(cfg, data, split_for_seed(cfg, data.train.labels, job.seed))
    if not info.path.exists():  # a models item exists to store its checkpoint for the cells
        raise OSError(f"{info.path} could not be stored (see the warning above)")
    how = "trained" if info.trained else "loaded"
    tqdm.write(f"{info.path.name}: {how} ({info.train_time_s:.1f} s of training)")


def compute_cell(job: CellJob, res: Resources) -> None:
    """The cell's results row and metadata, written atomically to its file."""
    cfg = job.cfg
    use_threads(cfg)
    data = res.dataset(cfg)
    original = res.original(cfg, data)
    started = time.perf_counter()
    row, seed_meta, _ = run_seed(cfg, data, original, job.seed)
    document = {**job.header,
                "row": row, "meta": {**seed_meta, "cell_s": time.perf_counter() - started,
                                     "device": str(data.train.labels.device), "git_commit": res.commit,
                                     "torch": torch.__version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     **backend_info(data.train.labels.device)},
                "config": cfg.to_dict()}
    remove_stale_temps(job.path)  # a killed writer's; we hold the cell's lock
    write_json(job.path, json_safe(document))
    tqdm.write(f"{job.label}: D_r {row['remain_acc']:.2f} D_f {row['forget_acc']:.2f} "
               f"D_t {row['test_acc']:.2f} MIA {row['mia']:.3f}")


def attempt(job: Job, res: Resources) -> str | None:
    """Train or compute ``job``; its failure in one line, or None. Missing data stops the worker."""
    try:
        if isinstance(job, ModelJob):
            train_model(job, res)
        else:
            compute_cell(job, res)
    except DataError:
        raise
    except (ConceptError, ConfigError, DownloadError) as exc:  # a missing package, file or weights, or a setting
        # found wrong only at work: its message says it all
        print(f"{job.label}: {exc}", file=sys.stderr)
        return f"{job.label}: {exc}"
    except Exception as exc:  # one bad item must not stop the others; the run reports it
        traceback.print_exc(file=sys.stderr)
        return f"{job.label}: {type(exc).__name__}: {exc}"
    return None


def run_stage(jobs: list[Job], index: int = 0, count: int = 1, launch: str = "",
              stop: Callable[[], bool] | None = None) -> list[str]:
    """Worker ``index`` of ``count`` over ``jobs`` (its own share first); returns the failures, one line each.
    ``stop``, asked before each item: end here (a local worker whose launching process was killed).

    An item that fails is marked failed for ``launch`` (``failure_marker``, written under its lock):
    the launch's other workers, which go through every item, leave it instead of each trying it
    again (a model that fails after hours would otherwise cost that much once per worker and be
    reported once per worker). A later launch tries it again; a success removes the marker. The
    marker names the worker: a SLURM task requeued after a timeout still reports the items it
    failed before it (else it ended COMPLETED and the cells array, ``afterok``, started anyway).
    """
    configure_progress()  # worker processes and SLURM jobs write to log files
    order = jobs[index::count] + [j for k, j in enumerate(jobs) if k % count != index]
    res = Resources()
    failures: list[str] = []
    desc = "models" if jobs and isinstance(jobs[0], ModelJob) else "cells"
    for job in tqdm(order, desc=desc if count == 1 else f"{desc} (worker {index + 1}/{count})", unit="job"):
        if stop is not None and stop():
            break
        lock = job_lock(job)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # another worker is on it
        try:
            marker = launch_marker(job, launch)
            if marker is not None:  # failed in this launch: not tried again
                if marker.get("worker") == index:  # by this worker before a requeue: still its failure to report
                    failures.append(str(marker.get("failure")))
                continue
            if finished_elsewhere(job):
                failure = other_settings(job)  # a cell another run wrote meanwhile, with other settings
                if failure is None:
                    continue
            else:
                failure = attempt(job, res)
                if failure is None:
                    failure_marker(job).unlink(missing_ok=True)
                    continue
            failures.append(failure)
            if launch:
                with contextlib.suppress(OSError):  # no room for the marker either: the others try the item again
                    write_json(failure_marker(job), {"launch": launch, "failure": failure, "worker": index})
        finally:
            lock.release()
    return failures


class StageFailed(RuntimeError):
    """Items of a stage failed; raised so that the SLURM task ends FAILED (its message: one line)."""


class StageWorker(submitit.helpers.Checkpointable):
    """``run_stage`` as a submitit job; on a timeout or preemption submitit requeues it and it resumes.

    A failed item fails the task: the cells array waits on the models array with ``afterok``,
    which a task that caught its items' errors and exited 0 would satisfy, and the cells would
    then train the missing models themselves, every array task at once. SLURM's CPU share (else
    ``slurm_cpus_per_task`` as the submission exported it: the local executor) sets the torch
    threads unless ``num_threads`` does (torch's default counts the node's cores).
    """

    def __call__(self, jobs: list[Job], index: int, count: int, launch: str = "") -> list[str]:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("CAMU_CPUS_PER_TASK", "")
        if cpus.isdigit() and jobs and not jobs[0].cfg.num_threads:
            torch.set_num_threads(int(cpus))
        failures = run_stage(jobs, index, count, launch)
        if failures:
            raise StageFailed(f"{len(failures)} of {len(jobs)} items failed: " + " | ".join(failures))
        return failures

