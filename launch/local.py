"""Workers on this machine: this process, or N processes each pinned to one GPU.

With GPUs, worker i sees only GPU i mod G (``CUDA_VISIBLE_DEVICES``, set before CUDA starts in
the worker), so each model lives on its own device; without, the workers share the CPU cores,
each with cores / N torch threads unless ``num_threads`` says otherwise. Thread counts can
change CPU rounding, so compare CPU runs at the same ``num_threads``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable

import torch

from launch.worker import Job, failed_in, run_stage


def visible_gpus(device: str) -> list[str]:
    """The GPU ids workers may be pinned to: ``CUDA_VISIBLE_DEVICES`` when set, else every GPU."""
    if device == "cpu" or not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_settings(index: int, count: int, gpus: list[str], cpus: int, num_threads: int) -> tuple[dict[str, str], int]:
    """Worker ``index``'s environment (its GPU, and cuBLAS's deterministic workspace, read once when cuBLAS
    starts: set in the fresh process before any CUDA call, not later by ``configure_determinism``) and
    torch thread count."""
    env = {"CUDA_VISIBLE_DEVICES": gpus[index % len(gpus)],
           "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")} if gpus else {}
    return env, num_threads or max(1, cpus // count)


def _worker(jobs: list[Job], index: int, count: int, env: dict[str, str], threads: int, launch: str) -> None:
    os.environ.update(env)  # before anything touches CUDA in this fresh process
    torch.set_num_threads(threads)
    parent = multiprocessing.parent_process()
    try:  # a launching process killed outright (SIGKILL) cannot stop its workers: each ends after its item
        failures = run_stage(jobs, index, count, launch, stop=lambda: parent is not None and not parent.is_alive())
    except KeyboardInterrupt:  # a Ctrl-C reaches every worker; the parent says in one line what was kept
        sys.exit(130)
    sys.exit(1 if failures else 0)


def run_local(jobs: list[Job], workers: int, log: Callable[[str], None] = print, launch: str = "") -> list[str]:
    """Run one stage; returns the failures, one line per failed item (the workers mark them for
    ``launch``), and one per worker that died without saying (killed, out of memory)."""
    count = min(workers, len(jobs))
    if count <= 1:
        return run_stage(jobs, launch=launch)
    cfg = jobs[0].cfg
    gpus = visible_gpus(cfg.device)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if gpus and count > len(gpus):
        log(f"{count} workers share {len(gpus)} GPUs")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA starts after the pinning
    procs = []
    for i in range(count):
        env, threads = worker_settings(i, count, gpus, cpus, cfg.num_threads)
        where = f"GPU {env['CUDA_VISIBLE_DEVICES']}" if env else f"{threads} CPU threads"
        log(f"worker {i + 1}/{count}: {where}")
        proc = context.Process(target=_worker, args=(jobs, i, count, env, threads, launch), name=f"camu-worker-{i}")
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:  # stop the workers too (a signal to this process alone would leave them running)
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            proc.join()
        raise
    failures = [line for line in (failed_in(job, launch) for job in jobs) if line is not None]
    for i, proc in enumerate(procs):
        if proc.exitcode not in (0, 1) or (proc.exitcode == 1 and not failures):  # 1: items failed, listed
            failures.append(f"worker {i + 1}/{count} exited with status {proc.exitcode}")
    return failures
