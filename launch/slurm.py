"""Stages as SLURM job arrays through submitit (or its local / debug executors).

Each stage is one array of min(items, ``slurm_array_parallelism``) tasks, every task a worker
over the stage's whole list (``launch.worker``). Stage 2 waits for stage 1 through a SLURM
dependency (``afterok``, and ``kill_on_invalid_dep`` so a failed stage 1 does not leave it
pending forever), so the submitting command can exit at once; the local and debug executors
have no scheduler, so there the command waits for each stage. A task that reaches its time
limit is requeued by submitit (``StageWorker`` is checkpointable) and skips what is done.
Logs and submitit's pickles: ``OUT_DIR/slurm/JOBID_TASK_*``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import submitit

from config import Config
from launch.worker import Job, StageWorker

HERE = Path(__file__).resolve().parents[1]


def job_parameters(slurm: Config) -> dict[str, object]:
    """submitit's parameters for every array task of a stage.

    ``gpus_per_node`` is left out for CPU jobs: ``--gpus-per-node=0`` is refused as an invalid
    GRES request by clusters without GPUs. ``SRUN_CPUS_PER_TASK``: since Slurm 22.05 the ``srun``
    that submitit runs the task under no longer inherits ``--cpus-per-task`` (one CPU otherwise).
    ``CAMU_CPUS_PER_TASK``: the CPU share where no SLURM sets one (the local executor's processes
    would otherwise each take every core of the machine they share).
    """
    setup = [f"export PYTHONPATH={shlex.quote(str(HERE))}${{PYTHONPATH:+:$PYTHONPATH}}",  # the jobs import camu
             "export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}",
             f"export CAMU_CPUS_PER_TASK={int(slurm.slurm_cpus_per_task)}"]
    return {"timeout_min": slurm.slurm_timeout_min, "mem_gb": slurm.slurm_mem_gb,
            "cpus_per_task": slurm.slurm_cpus_per_task, "tasks_per_node": 1,
            "slurm_array_parallelism": slurm.slurm_array_parallelism, "slurm_setup": setup, "local_setup": setup,
            **({"gpus_per_node": slurm.slurm_gpus_per_task} if slurm.slurm_gpus_per_task else {}),
            **({"slurm_partition": slurm.slurm_partition} if slurm.slurm_partition else {})}


def executor(slurm: Config, out_dir: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=out_dir / "slurm" / "%j", cluster=slurm.submitit_cluster)
    ex.update_parameters(**job_parameters(slurm))
    return ex


def additional(slurm: Config) -> dict[str, str]:
    return dict(item.split("=", 1) for item in slurm.slurm_additional.split())


def submit(stages: list[tuple[str, list[Job]]], slurm: Config, out_dir: Path, wait: bool,
           log: Callable[[str], None] = print, launch: str = "") -> tuple[list[str], bool]:
    """Submit every non-empty stage; returns (failures, whether all jobs have finished)."""
    ex = executor(slurm, out_dir)
    scheduled = slurm.submitit_cluster == "slurm"
    after: str | None = None
    handles: list[submitit.Job] = []
    failures: list[str] = []
    for name, jobs in stages:
        if not jobs:
            continue
        count = min(len(jobs), slurm.slurm_array_parallelism)
        extra = additional(slurm)
        if after:  # a dependency of the user's own (slurm_additional) is kept beside it (',' is SLURM's and)
            mine = extra.get("dependency")
            extra |= {"dependency": f"afterok:{after}" + (f",{mine}" if mine else ""), "kill_on_invalid_dep": "yes"}
        ex.update_parameters(name=f"camu-{name}", slurm_additional_parameters=extra)
        handles = ex.map_array(StageWorker(), [jobs] * count, list(range(count)), [count] * count, [launch] * count)
        arrays = sorted({h.job_id.split("_")[0] for h in handles})
        log(f"stage {name}: {len(jobs)} {name} in {count} jobs: {', '.join(h.job_id for h in handles)}"
            f"{f' (after {after})' if after else ''}; logs in {out_dir / 'slurm'}")
        if scheduled and not wait:
            after = ":".join(arrays)
            continue
        failures += collect(handles)
        if failures:
            return failures, True  # stage 2 would train what stage 1 failed to
    return failures, not scheduled or wait or not handles


def collect(handles: list[submitit.Job]) -> list[str]:
    failures = []
    for handle in handles:
        try:
            failures += handle.result()
        except Exception as exc:  # the job itself failed (killed, timed out too often, ...)
            failures.append(f"job {handle.job_id}: {str(exc).strip().splitlines()[-1][:1000] if str(exc) else exc!r}")
    return failures
