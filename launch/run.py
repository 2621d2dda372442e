"""The two stages of a sweep, run by the chosen launcher, or only described (``--dry-run``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data import DataError
from launch.estimate import Estimate, estimate
from launch.jobs import CellJob, ModelJob, model_jobs, worker_device
from launch.local import run_local
from launch.options import LaunchOptions
from launch.slurm import submit
from launch.worker import Job

SHOWN = 8  # models listed by name in a dry run


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)
    finished: bool = True  # False: SLURM jobs submitted and not waited for


def stages(cells: list[CellJob], options: LaunchOptions, download: bool = True
           ) -> tuple[list[tuple[str, list[Job]]], list[ModelJob]]:
    """Stage 1: the models the cells need and the cache lacks; stage 2: the cells. Also every model needed."""
    if not cells:
        return [("models", []), ("cells", [])], []
    models = model_jobs(cells, worker_device(cells[0].cfg, options.launcher, options.slurm), download)
    return [("models", [m for m in models if not m.path.exists()]), ("cells", list(cells))], models


def jobs_per_stage(items: int, options: LaunchOptions) -> int:
    width = options.slurm.slurm_array_parallelism if options.launcher == "submitit" else options.workers
    return min(items, width)


def run(cells: list[CellJob], options: LaunchOptions, out_dir: Path, log: Callable[[str], None] = print) -> Outcome:
    """Train the missing shared models, then compute ``cells``."""
    plan, _ = stages(cells, options)
    launch = uuid.uuid4().hex  # this launch's workers leave an item one of them saw fail (worker.run_stage)
    if options.launcher == "submitit":
        try:
            failures, finished = submit(plan, options.slurm, out_dir, options.wait, log, launch)
        except RuntimeError as exc:  # no sbatch / srun here: submitit says so
            return Outcome([f"submitit: {exc}"])
        return Outcome(failures, finished)
    failures: list[str] = []
    for _, jobs in plan:
        if jobs:
            failures += run_local(jobs, options.workers, log, launch)
        if failures:
            break  # cells would train what stage 1 failed to
    return Outcome(failures)


def dry_run(cells: list[CellJob], total: int, options: LaunchOptions, out_dir: Path,
            log: Callable[[str], None] = print) -> None:
    """The plan, its jobs per stage and its device-hours; reads the data's labels, writes nothing."""
    try:
        plan, models = stages(cells, options, download=False)
    except DataError as exc:  # the user's download=true does not hold here
        raise DataError(f"dry run (it downloads nothing): {exc}") from None
    to_train = plan[0][1]
    where = (f"submitit ({options.slurm.submitit_cluster})" if options.launcher == "submitit"
             else f"local, {options.workers} worker{'s' if options.workers > 1 else ''}")
    log(f"plan for {out_dir} ({where}):")
    log(f"  cells: {total} in the grid, {total - len(cells)} stored, {len(cells)} to compute")
    for kind in ("original", "retrain"):
        of_kind = [m for m in models if m.kind == kind]
        missing = [m for m in to_train if m.kind == kind]
        log(f"  {kind} models (for the cells to compute): {len(of_kind)} needed, {len(of_kind) - len(missing)} stored, "
            f"{len(missing)} to train")
    est: Estimate = estimate(to_train, cells, out_dir)
    stage_unknown = (est.models_unknown, est.cells_unknown)
    for (name, jobs), hours, unknown in zip(plan, (est.models_h, est.cells_h), stage_unknown, strict=True):
        log(f"  stage {name}: {len(jobs)} items in {jobs_per_stage(len(jobs), options)} jobs, "
            f"~{_hours(hours)}{_uncounted(unknown)}")
    log(f"  estimate: ~{_hours(est.models_h + est.cells_h)} in all{_uncounted(sum(stage_unknown))} ({est.source})")
    warning = timeout_warning(est, options)
    if warning:
        log(f"  warning: {warning}")
    for line in est.unknown:
        log(f"  no measure for {line}: not counted")
    for m in to_train[:SHOWN]:
        for_cells = f"for {len(m.cells)} cells, e.g. {m.cells[0]}" if len(m.cells) > 1 else f"for {m.cells[0]}"
        log(f"  to train: {m.path.name} ({m.kind}, {for_cells})")
    if len(to_train) > SHOWN:
        log(f"  ... and {len(to_train) - SHOWN} more models to train")


def timeout_warning(est: Estimate, options: LaunchOptions) -> str:
    """'' unless a SLURM task cannot finish the longest item within its time limit.

    A task that reaches ``slurm_timeout_min`` is requeued and skips what is stored, but an item it
    was in the middle of starts again from its beginning: one longer than the limit never ends.
    """
    limit_min = options.slurm.slurm_timeout_min
    if options.launcher != "submitit" or est.longest_s <= limit_min * 60:
        return ""
    return (f"the longest item ({est.longest}, ~{est.longest_s / 60:.0f} min) exceeds slurm_timeout_min "
            f"({limit_min} min), and a requeued task starts it again from the beginning: raise slurm_timeout_min")


def _uncounted(n: int) -> str:
    """What an estimate leaves out: items nothing stored measures (so 0.00 does not read as 'no work')."""
    return f" + {n} item{'s' if n > 1 else ''} not measured" if n else ""


def _hours(h: float) -> str:
    return f"{h:.2f} device-hours" if h >= 0.1 or h == 0 else f"{h * 3600:.0f} device-seconds"
