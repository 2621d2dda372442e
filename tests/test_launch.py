"""Launchers: submitit's local executor runs the grid in two stages, results do not depend on who
computed them, killed workers leave nothing partial and no lock behind, a model is trained once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from filelock import Timeout

import reproduce
from config import parse_args
from launch.local import visible_gpus, worker_settings
from launch.options import parse_options
from launch.worker import cell_lock
from models.cache import CacheBusy, cache_lock, cache_path, cached_model, hold
from models.original import original_path

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--datasets=mnist", "--scenarios=class", "--methods=camu,finetune", "--seeds=0,1", "--train_limit=1000",
        "--test_limit=300", "--train_epochs=1", "--unlearn_epochs=1", "--finetune_epochs=1", "--mia_train_size=100",
        "--mia_attacks=efficacy", "--relearn=false", "--download=false", "--num_threads=1"]
SUBMITIT = ["--launcher=submitit", "--submitit_cluster=local", "--slurm_array_parallelism=2",
            "--slurm_gpus_per_task=0", "--slurm_timeout_min=10"]
# What a cell measures about its own run; every other byte of the file is the same whoever computed it.
TIMING = {("row", "unlearn_time_s"), ("meta", "split_s"), ("meta", "eval_s"), ("meta", "retrain_compare_s"),
          ("meta", "cell_s"), ("meta", "finished")}


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = reproduce.main(argv)
    return status, out.getvalue()


def _cells(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "cells" / "mnist-class").glob("*.json"))}


_HOLD = """
import importlib, sys, time
from pathlib import Path
module, name, path = sys.argv[1:]
lock = getattr(importlib.import_module(module), name)(Path(path))
lock.acquire()
print("held", flush=True)
time.sleep(300)
"""


def _hold(factory: str, path: Path) -> subprocess.Popen:
    """Another process holding the lock ``factory`` (``module.function``) gives for ``path``, until killed."""
    module, name = factory.rsplit(".", 1)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, module, name, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def submitted(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    """The 4-cell grid computed by submitit's local executor, 2 jobs at a time."""
    out = tmp_path_factory.mktemp("grid")
    args = [*GRID, f"--data_root={data_root}", f"--out_dir={out}"]
    status, log = _run([*args, *SUBMITIT])
    assert status == 0, log
    return out, args, log


def test_submitit_local_runs_two_stages_with_two_jobs_and_writes_tables(submitted):
    out, _, log = submitted
    assert "4 cells: 0 stored, 4 to compute" in log
    assert re.search(r"stage models: 2 models in 2 jobs: \d+, \d+;", log), log  # the original and the retrained model
    assert re.search(r"stage cells: 4 cells in 2 jobs: \d+, \d+;", log), log
    assert sorted(_cells(out)) == ["camu-seed0.json", "camu-seed1.json", "finetune-seed0.json", "finetune-seed1.json"]
    assert len(list((out / "checkpoints").glob("original-mnist-*.pt"))) == 1
    assert len(list((out / "checkpoints").glob("retrain-mnist-*.pt"))) == 1  # class removal: one D_r for both seeds
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*/*_log.out"))
    trained = re.findall(r"(\S+\.pt): trained", logs)
    assert sorted(trained) == sorted(p.name for p in (out / "checkpoints").glob("*.pt")), logs  # each once, stage 1
    rows = [line.split("|")[1].strip() for line in (out / "tables" / "mnist-class.md").read_text().splitlines()[2:]]
    assert rows == ["camu", "finetune"]
    for name, content in _cells(out).items():
        cell = json.loads(content)
        assert cell["row"]["retrain"]["forget_acc"] == 0.0 and cell["meta"]["traces"], name
        assert "slurm_partition" in cell["config"] and cell["config"]["submitit_cluster"] == "slurm"  # not the launch's


def _strip(cell: dict) -> dict:
    return {part: ({k: v for k, v in body.items() if (part, k) not in TIMING} if isinstance(body, dict) else body)
            for part, body in cell.items()}


def test_a_cell_is_the_same_computed_in_process_or_by_a_worker(submitted, tmp_path):
    out, args, _ = submitted
    path = out / "cells" / "mnist-class" / "camu-seed1.json"
    by_worker = json.loads(path.read_bytes())
    path.rename(tmp_path / "camu-seed1.json")
    try:
        status, log = _run(args)  # the default launcher: this process
        assert status == 0 and "4 cells: 3 stored, 1 to compute" in log, log
        in_process = json.loads(path.read_bytes())
    finally:
        os.replace(tmp_path / "camu-seed1.json", path)  # the other tests see the worker's cell
    assert in_process["meta"]["git_commit"] == by_worker["meta"]["git_commit"]
    assert _strip(in_process) == _strip(by_worker)


def test_dry_run_reports_the_plan_and_writes_nothing(submitted, tmp_path, data_root):
    out, args, _ = submitted
    before = _tree(out)
    status, log = _run([*args, "--seeds=0,1,2", "--methods=camu,finetune,retrain", "--dry-run"])
    assert status == 0, log
    assert _tree(out) == before
    assert "cells: 9 in the grid, 4 stored, 5 to compute" in log
    assert "original models (for the cells to compute): 1 needed, 1 stored, 0 to train" in log
    assert "retrain models (for the cells to compute): 1 needed, 1 stored, 0 to train" in log
    assert "stage cells: 5 items in 1 jobs" in log
    assert "no measure for 3 mnist-class retrain cells" in log  # camu/finetune from 4 stored cells, retrain unknown
    assert re.search(r"stage cells: 5 items in 1 jobs, ~[^\n]* \+ 3 items not measured\n", log), log
    assert re.search(r"estimate: ~[^\n]* in all \+ 3 items not measured \(", log), log
    assert "4 stored cells measured on cpu" in log

    fresh = tmp_path / "fresh"
    status, log = _run([*GRID, f"--data_root={data_root}", f"--out_dir={fresh}", "--dry-run",
                        *SUBMITIT])
    assert status == 0 and not fresh.exists(), log
    assert "retrain models (for the cells to compute): 1 needed, 0 stored, 1 to train" in log
    assert "stage models: 2 items in 2 jobs" in log and "stage cells: 4 items in 2 jobs" in log
    assert re.search(r"to train: retrain-mnist-\w+\.pt \(retrain, for 4 cells, e\.g\. mnist-class camu seed 0\)", log)
    status, log = _run([*GRID, f"--data_root={data_root}", f"--out_dir={fresh}", "--dry-run", "--scenarios=random",
                        "--methods=camu", "--seeds=0"])
    assert status == 0 and re.search(r"to train: retrain-mnist-\w+\.pt \(retrain, for mnist-random camu seed 0\)",
                                     log), log


def test_killed_workers_leave_no_partial_file_and_a_rerun_computes_only_the_rest(submitted, tmp_path, data_root):
    src, _, _ = submitted
    out = tmp_path / "sweep"
    (out / "checkpoints").mkdir(parents=True)
    for ckpt in (src / "checkpoints").glob("*.pt"):  # the same recipe: stage 1 has nothing to do
        (out / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    args = [*GRID, f"--data_root={data_root}", f"--out_dir={out}"]
    proc = subprocess.Popen([sys.executable, "reproduce.py", *args, "--workers=2"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _cells(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # both workers die, one of them (at least) in the middle of a cell
    proc.wait()
    before = _cells(out)
    assert 1 <= len(before) < 4, sorted(before)
    assert all(json.loads(content)["row"] for content in before.values()), "a killed write left a partial cell"

    missing = sorted({f"{m}-seed{s}.json" for m in ("camu", "finetune") for s in (0, 1)} - set(before))
    for name in missing:  # SIGKILL takes effect when a worker leaves the kernel: one inside fsync holds its lock on
        lock = cell_lock(out / "cells" / "mnist-class" / name)  # until then, and a rerun would leave it that cell
        lock.acquire(timeout=120)
        lock.release()
    (out / "cells" / "mnist-class" / f".{missing[0]}.planted.tmp").write_text('{"row": ')  # as a kill leaves it

    status, log = _run(args)  # the dead workers' cell locks must not block it (a held lock would skip its cell)
    assert status == 0 and f"4 cells: {len(before)} stored, {4 - len(before)} to compute" in log, log
    after = _cells(out)
    assert len(after) == 4 and all(after[name] == content for name, content in before.items())
    # a worker killed between its temp file and the rename leaves the temp; the cell's next writer removes it
    assert not list(out.rglob("*.tmp"))


def test_a_cell_whose_lock_another_run_holds_is_left_to_it_and_reported(submitted, tmp_path):
    out, args, _ = submitted
    path = out / "cells" / "mnist-class" / "finetune-seed0.json"
    holder = _hold("launch.worker.cell_lock", path)
    path.rename(tmp_path / path.name)
    try:
        status, log = _run(args)
        assert status == 0 and "4 cells: 3 stored, 1 to compute" in log, log
        assert "1 cells left to another run that holds their locks (rerun once it ends): " \
               "mnist-class finetune seed 0" in log, log
        assert not path.exists()  # not computed here
    finally:
        holder.kill()
        holder.wait()
        os.replace(tmp_path / path.name, path)  # the other tests see the worker's cell


_TRAIN_ORIGINAL = """
import hashlib, sys, torch
from config import parse_args
from data import load_dataset
from models.original import original_model
cfg = parse_args(sys.argv[1:])
torch.set_num_threads(1)
data = load_dataset(cfg.dataset, cfg.data_root, False, "cpu", cfg.train_limit, cfg.test_limit)
model, info = original_model(cfg, data)
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
print("RESULT", "trained" if info.trained else "loaded", digest, flush=True)
"""


def test_two_workers_on_one_missing_original_train_it_once(data_root, tmp_path):
    argv = [f"--data_root={data_root}", f"--out_dir={tmp_path}", "--train_limit=2000", "--test_limit=100",
            "--train_epochs=1", "--download=false"]
    lock = cache_lock(original_path(parse_args(argv), "cpu"))
    lock.acquire()  # both start while the key is busy, so both must wait for it
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _TRAIN_ORIGINAL, *argv], cwd=ROOT, stdout=log.open("w"),
                              stderr=subprocess.STDOUT) for log in logs]
    try:
        deadline = time.monotonic() + 120
        while not all("waiting for original-mnist-" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [x.read_text() for x in logs]
            time.sleep(0.05)
    finally:
        lock.release()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    results = sorted(re.search(r"RESULT (\w+) (\w+)", log.read_text()).groups() for log in logs)
    assert [how for how, _ in results] == ["loaded", "trained"]  # one trained it, the other waited and loaded it
    assert results[0][1] == results[1][1]


def test_a_dead_holders_lock_is_released_by_the_os(tmp_path):
    path = cache_path(tmp_path / "checkpoints", "original-mnist", {"k": 0})
    proc = _hold("models.cache.cache_lock", path)
    lock = cache_lock(path)
    with pytest.raises(Timeout):
        lock.acquire(timeout=0)
    with pytest.raises(CacheBusy):  # a live holder: lock_timeout_min gives up
        hold(lock, path.name, timeout_s=0.3, log=lambda _: None)
    trained = []  # and the model is not trained beside it: CacheBusy, a TimeoutError, was taken for an OSError
    with pytest.raises(CacheBusy):  # (a read-only cache) and the model trained without the lock
        cached_model(torch.nn.Linear(1, 1), path.parent, "original-mnist", {"k": 0}, trained.append,
                     {"lock_timeout_min": 0.005}, log=lambda _: None)
    assert trained == []
    proc.send_signal(signal.SIGKILL)  # the job dies without releasing anything
    proc.wait()
    assert Path(f"{path}.lock").exists()  # the file stays; it is not the lock
    started = time.monotonic()
    hold(lock, path.name, timeout_s=5, log=lambda _: None)
    assert time.monotonic() - started < 1
    lock.release()


def test_workers_pinned_to_one_gpu_each_or_sharing_the_cpu_threads(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cublas = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # before cuBLAS starts in the worker: deterministic=true needs it
    assert [worker_settings(i, 3, ["0", "1"], 16, 0) for i in range(3)] == [
        ({"CUDA_VISIBLE_DEVICES": "0", **cublas}, 5), ({"CUDA_VISIBLE_DEVICES": "1", **cublas}, 5),
        ({"CUDA_VISIBLE_DEVICES": "0", **cublas}, 5)]
    assert worker_settings(1, 4, [], 2, 0) == ({}, 1)
    assert worker_settings(0, 2, [], 16, 3) == ({}, 3)  # num_threads set: kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert visible_gpus("auto") == ["4", "6"] and visible_gpus("cpu") == []


def test_sbatch_script_carries_the_slurm_keys_and_the_stage_dependency(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    from launch.slurm import additional, executor

    options, rest = parse_options(["--launcher=submitit", "--slurm_partition=gpu", "--slurm_gpus_per_task=2",
                                   "--slurm_additional=account=lab qos=high", "--seeds=0"])
    assert rest == ["--seeds=0"]
    ex = executor(options.slurm, tmp_path)
    ex.update_parameters(slurm_additional_parameters={**additional(options.slurm), "dependency": "afterok:12"})
    script = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=32GB", "--time=240",
                 "--account=lab", "--qos=high", "--dependency=afterok:12", "--signal=USR2"):
        assert f"#SBATCH {line}" in script, script
    assert f"export PYTHONPATH={ROOT}" in script


def test_the_cells_array_keeps_a_dependency_of_the_user_s_own_beside_the_stage_one(monkeypatch, tmp_path):
    """slurm_additional's dependency was replaced by the stage dependency for the cells array."""
    from launch import slurm

    calls = []

    class Executor:
        def update_parameters(self, **kw):
            calls.append(kw)

        def map_array(self, fn, *args):
            return [SimpleNamespace(job_id=f"{len(calls)}_{i}") for i in range(len(args[0]))]

    monkeypatch.setattr(slurm, "executor", lambda cfg, out: Executor())
    options, _ = parse_options(["--launcher=submitit", "--slurm_additional=dependency=afterany:7 qos=high"])
    stages = [("models", [SimpleNamespace()]), ("cells", [SimpleNamespace(), SimpleNamespace()])]
    assert slurm.submit(stages, options.slurm, tmp_path, wait=False, log=lambda line: None) == ([], False)
    models, cells = (c["slurm_additional_parameters"] for c in calls)
    assert models == {"dependency": "afterany:7", "qos": "high"}
    assert cells == {"dependency": "afterok:1,afterany:7", "qos": "high", "kill_on_invalid_dep": "yes"}


@pytest.mark.parametrize("bad, says", [(["--slurm_partition=gpu"], "slurm_partition: only with --launcher=submitit"),
                                       (["--table-only", "--dry-run"], "--table-only computes nothing"),
                                       (["--table-only", "--workers=2"], "--table-only computes nothing"),
                                       (["--table-only", "--workers=1"], "--table-only computes nothing"),
                                       (["--table-only", "--launcher=local"], "--table-only computes nothing"),
                                       (["--bogus"], "'--bogus': expected --key=value or a flag (--table-only, "
                                                     "--dry-run, --wait)")])
def test_launch_flags_that_would_be_ignored_are_refused(bad, says, tmp_path, capsys):
    assert reproduce.main([*bad, "--datasets=mnist", f"--out_dir={tmp_path / 'sweep'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: ") and says in err and "\n" not in err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("bad", [["--launcher=pbs"], ["--workers=0"], ["--workers=two"], ["--wait"],
                                 ["--launcher=submitit", "--workers=2"], ["--slurm_mem_gb=0"],
                                 ["--submitit_cluster=aws"], ["--slurm_additional=account"],
                                 ["--slurm_array_parallelism=0"], ["--lock_timeout_min=-1"]])
def test_bad_launch_flags_are_one_line_exit_2_and_write_nothing(bad, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert reproduce.main([*bad, "--datasets=mnist", f"--out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error:") and "\n" not in err
    assert not out.exists()


def test_submitit_jobs_get_absolute_folders_the_local_launcher_keeps_them(data_root, tmp_path, monkeypatch):
    """SLURM jobs may start in another folder than the submitting command: relative folders go absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").symlink_to(data_root)
    seen: dict[str, list] = {}

    def fake_run(jobs, options, out_dir, log=print):
        seen[options.launcher] = [(out_dir, job.path, job.cfg.out_dir, job.cfg.data_root, job.cfg.concept_words)
                                  for job in jobs]
        return reproduce.launch.Outcome(finished=False)

    monkeypatch.setattr(reproduce.launch, "run", fake_run)
    args = [*GRID, "--methods=camu", "--seeds=0", "--data_root=ds", "--out_dir=sweep", "--concept_words=words.txt"]
    assert _run([*args, *SUBMITIT])[0] == 0
    assert _run(args)[0] == 0
    assert seen["submitit"] == [(tmp_path / "sweep", tmp_path / "sweep" / "cells" / "mnist-class" / "camu-seed0.json",
                                 str(tmp_path / "sweep"), str(tmp_path / "ds"), str(tmp_path / "words.txt"))]
    assert seen["local"] == [(Path("sweep"), Path("sweep/cells/mnist-class/camu-seed0.json"), "sweep", "ds",
                              "words.txt")]


def test_submitit_without_slurm_says_so_and_fails(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no srun, no sbatch
    out = tmp_path / "sweep"
    status = reproduce.main([*GRID, "--methods=camu", "--seeds=0", f"--data_root={data_root}", f"--out_dir={out}",
                             "--launcher=submitit"])
    assert status == 1
    err = capsys.readouterr().err
    assert "failed: submitit:" in err and "slurm" in err.lower()
    assert not (out / "cells").exists() and not (out / "checkpoints").exists()


def test_the_model_stage_in_this_process_trains_with_num_threads(monkeypatch, tmp_path):
    """Both stages run under ``num_threads``; the model stage once kept torch's default (every core)."""
    import launch.worker as worker
    from launch.jobs import ModelJob

    seen: list[int] = []

    def fake_retrained(cfg, data, split):
        seen.append(torch.get_num_threads())
        (tmp_path / "m.pt").write_bytes(b"")  # stored, as the models stage needs
        return None, SimpleNamespace(trained=True, train_time_s=0.0, path=tmp_path / "m.pt")

    monkeypatch.setattr(worker, "retrained_model", fake_retrained)
    monkeypatch.setattr(worker, "split_for_seed", lambda cfg, labels, seed: None)
    data = SimpleNamespace(train=SimpleNamespace(labels=None))
    monkeypatch.setattr(worker.Resources, "dataset", lambda self, cfg: data)
    cfg = parse_args(["--num_threads=1", "--download=false"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert worker.run_stage([ModelJob("retrain", cfg, 0, tmp_path / "m.pt")]) == []
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    (tmp_path / "m.pt").unlink()
    monkeypatch.setattr(worker, "retrained_model", lambda cfg, data, split: (
        None, SimpleNamespace(trained=True, train_time_s=0.0, path=tmp_path / "m.pt")))  # the cache write failed
    failures = worker.run_stage([ModelJob("retrain", cfg, 0, tmp_path / "m.pt")])
    assert len(failures) == 1 and "m.pt could not be stored" in failures[0]  # the cells would each train it


def test_ctrl_c_stops_every_local_worker_quietly(monkeypatch):
    """A worker ends a Ctrl-C with status 130 (no traceback); the parent, interrupted while waiting,
    sends SIGINT to the workers still running (a signal to the parent alone would leave them computing)."""
    import launch.local as local

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "run_stage", interrupted)
    with pytest.raises(SystemExit) as exit_:
        local._worker([], 0, 2, {}, 1, "")
    assert exit_.value.code == 130

    signalled = []

    class Worker:
        def __init__(self, target, args, name):
            self.pid, self.joins = 1000 + args[1], 0

        def start(self):
            pass

        def join(self):
            self.joins += 1
            if self.pid == 1000 and self.joins == 1:
                raise KeyboardInterrupt

        def is_alive(self):
            return self.joins < 2

    monkeypatch.setattr(local.multiprocessing, "get_context", lambda how: SimpleNamespace(Process=Worker))
    monkeypatch.setattr(local.os, "kill", lambda pid, sig: signalled.append((pid, sig)))
    jobs = [SimpleNamespace(cfg=SimpleNamespace(device="cpu", num_threads=1))] * 2
    with pytest.raises(KeyboardInterrupt):
        local.run_local(jobs, 2, log=lambda line: None)
    assert signalled == [(1000, signal.SIGINT), (1001, signal.SIGINT)]


def test_a_cell_missing_an_optional_file_fails_in_one_line_and_the_others_run(data_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    status = reproduce.main([*GRID, "--methods=concept_poison,finetune", "--seeds=0", "--compare_retrain=false",
                             "--finetune_epochs=1", "--concept_bank=clip",
                             f"--concept_words={tmp_path / 'missing.txt'}", f"--data_root={data_root}",
                             f"--out_dir={out}"])
    assert status == 1
    said = capsys.readouterr()
    err = said.err
    assert "Traceback" not in err
    missing = tmp_path / "missing.txt"
    assert f"failed: mnist-class concept_poison seed 0: concept_words file {missing} cannot be read" in err
    assert sorted(_cells(out)) == ["finetune-seed0.json"]
    warning = (f"warning: 1 mnist-class concept_poison cells cannot run here and are left out, the other cells run: "
               f"concept_words file {missing} cannot be read")
    assert said.out.index(warning) < said.out.index("2 cells: 0 stored, 1 to compute")  # said before any training
    assert "Traceback" not in err and err.count(f"{missing} cannot be read") == 1  # only the closing failed: line


def test_a_dry_run_without_the_data_says_it_downloads_nothing(tmp_path, capsys):
    """The user's download=true does not hold in a dry run: its data error says so."""
    status = reproduce.main([*GRID, f"--data_root={tmp_path / 'none'}", f"--out_dir={tmp_path / 'out'}", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and "\n" not in err and not (tmp_path / "out").exists()
    assert err.startswith("data error: dry run (it downloads nothing): mnist: files not found in "), err


def test_a_sweep_whose_every_cell_would_fail_stops_before_training(data_root, tmp_path, capsys):
    """Only concept cells, and the clip bank's words file missing: one line, and no model trained (a CIFAR concept
    sweep would otherwise train a ResNet-50 original and its retrained model first)."""
    out = tmp_path / "sweep"
    status = reproduce.main([*GRID, "--methods=concept_poison", "--concept_bank=clip",
                             f"--concept_words={tmp_path / 'missing.txt'}", f"--data_root={data_root}",
                             f"--out_dir={out}"])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: concept_words file {tmp_path / 'missing.txt'} cannot be read") and "\n" not in err
    assert not (out / "checkpoints").exists() and not _cells(out)


def test_a_concept_the_bank_lacks_stops_a_mixed_sweep_as_a_config_error(data_root, tmp_path, capsys):
    """Wrong on any machine, unlike a missing words file: one line, exit 2, before any model or cell."""
    out = tmp_path / "sweep"
    status = reproduce.main([*GRID, "--methods=concept_poison,finetune", "--seeds=0", "--compare_retrain=false",
                             "--concept_poison_concept=antler", f"--data_root={data_root}", f"--out_dir={out}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("config error: concept_poison_concept: 'antler' is not a concept of the "
                                          "cav bank") and "\n" not in err
    assert not (out / "checkpoints").exists() and not _cells(out)


def test_a_stage_task_with_failed_items_fails_so_afterok_holds_the_cells_back(monkeypatch):
    """The cells array starts after the models array only if every models task succeeded (afterok):
    a task whose items failed must end FAILED, not exit 0 with its failures as a return value."""
    import launch.worker as worker

    jobs = [SimpleNamespace(cfg=SimpleNamespace(num_threads=0))] * 3
    monkeypatch.setattr(worker, "run_stage", lambda *args: ["original-mnist: OSError: disk full"])
    with pytest.raises(worker.StageFailed, match=r"^1 of 3 items failed: original-mnist: OSError: disk full$"):
        worker.StageWorker()(jobs, 0, 1)
    monkeypatch.setattr(worker, "run_stage", lambda *args: [])
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    threads = torch.get_num_threads()
    try:
        assert worker.StageWorker()(jobs, 0, 1) == []
        assert torch.get_num_threads() == 3  # SLURM's share, as num_threads is 0
        monkeypatch.delenv("SLURM_CPUS_PER_TASK")
        monkeypatch.setenv("CAMU_CPUS_PER_TASK", "1")  # the local executor: slurm_cpus_per_task, exported
        assert worker.StageWorker()(jobs, 0, 1) == [] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_a_worker_asked_to_stop_ends_between_items(monkeypatch, tmp_path):
    """A local worker whose launching process was killed outright (SIGKILL: no Ctrl-C passed on) kept computing
    the whole stage as an orphan; it now ends after the item it is on."""
    from filelock import FileLock

    import launch.worker as worker

    done: list[str] = []
    jobs = [SimpleNamespace(name=f"job{i}") for i in range(3)]
    monkeypatch.setattr(worker, "job_lock", lambda job: FileLock(str(tmp_path / f"{job.name}.lock")))
    monkeypatch.setattr(worker, "launch_marker", lambda job, launch: None)
    monkeypatch.setattr(worker, "finished_elsewhere", lambda job: False)
    monkeypatch.setattr(worker, "failure_marker", lambda job: tmp_path / f".{job.name}.failed")
    monkeypatch.setattr(worker, "attempt", lambda job, res: done.append(job.name))
    assert worker.run_stage(jobs, stop=lambda: len(done) == 1) == [] and done == ["job0"]
    assert worker.run_stage(jobs) == [] and done == ["job0", "job0", "job1", "job2"]  # not asked: every item


def test_cpu_jobs_ask_for_no_gpus_and_srun_gets_the_cpus():
    from launch.slurm import job_parameters

    cpu = job_parameters(parse_args(["--slurm_gpus_per_task=0", "--slurm_cpus_per_task=4"]))
    assert "gpus_per_node" not in cpu and cpu["cpus_per_task"] == 4  # --gpus-per-node=0 is an invalid GRES request
    assert "export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}" in cpu["slurm_setup"]
    assert "export CAMU_CPUS_PER_TASK=4" in cpu["local_setup"]  # no SLURM there to give the share
    assert job_parameters(parse_args(["--slurm_gpus_per_task=1"]))["gpus_per_node"] == 1


def test_dry_run_warns_when_one_item_outlasts_the_slurm_time_limit(tmp_path):
    """A requeued task restarts the item it was in: an item longer than the limit would never finish."""
    from launch.estimate import estimate
    from launch.jobs import CellJob
    from launch.options import LaunchOptions
    from launch.run import timeout_warning

    cfg = parse_args(["--method=scrub", "--relearn=false"])
    stored = tmp_path / "cells" / "mnist-class" / "scrub-seed0.json"
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({"dataset": "mnist", "scenario": "class", "method": "scrub", "seed": 0,
                                  "row": {}, "meta": {"cell_s": 5400.0, "device": "cpu"}, "config": cfg.to_dict()}))
    header = {"dataset": "mnist", "scenario": "class", "method": "scrub", "seed": 1}
    est = estimate([], [CellJob(header, cfg, tmp_path / "cells" / "mnist-class" / "scrub-seed1.json")], tmp_path)
    assert (est.longest_s, est.longest) == (5400.0, "mnist-class scrub seed 1")
    slurm = LaunchOptions(launcher="submitit", slurm=parse_args(["--slurm_timeout_min=60"]))
    assert timeout_warning(est, slurm) == ("the longest item (mnist-class scrub seed 1, ~90 min) exceeds "
                                           "slurm_timeout_min (60 min), and a requeued task starts it again "
                                           "from the beginning: raise slurm_timeout_min")
    assert timeout_warning(est, LaunchOptions(launcher="submitit", slurm=parse_args(["--slurm_timeout_min=120"]))) == ""
    assert timeout_warning(est, LaunchOptions(launcher="local", slurm=slurm.slurm)) == ""  # no time limit there


def _camu_cells(monkeypatch, folder: Path, seeds: range, compute, *args: str) -> list:
    """CaMU cells of ``seeds`` under ``folder`` (config: ``args``) whose workers compute them with ``compute``
    (neither dataset nor model loaded): what a sweep's workers are handed, to drive ``run_stage``."""
    from launch import worker
    from launch.jobs import CellJob

    monkeypatch.setattr(worker, "compute_cell", compute)
    monkeypatch.setattr(worker.Resources, "__init__", lambda self: None)
    cfg = parse_args(["--download=false", *args])
    return [CellJob({"dataset": "mnist", "scenario": "class", "method": "camu", "seed": s}, cfg,
                    folder / f"camu-seed{s}.json") for s in seeds]


def test_worker_processes_failures_are_named_in_the_parent_s_report(monkeypatch, tmp_path):
    """The parent said only 'worker 1/2 exited with status 1'; it now reads the items its workers marked
    failed, and names a worker only when it died without marking (a kill, running out of memory)."""
    import launch.local as local
    from launch import worker

    jobs = _camu_cells(monkeypatch, tmp_path, range(2),
                       lambda job, res: (_ for _ in ()).throw(RuntimeError("no room")), "--num_threads=1")

    class Process:  # the worker run in this process, with the arguments run_local gives a spawned one
        def __init__(self, target, args, name):
            self.args, self.exitcode, self.pid = args, None, 0

        def start(self):
            jobs, index, count, _, _, launch = self.args
            self.exitcode = 1 if worker.run_stage(jobs, index, count, launch) else 0

        def join(self):
            pass

    monkeypatch.setattr(local.multiprocessing, "get_context", lambda how: SimpleNamespace(Process=Process))
    assert local.run_local(jobs, 2, log=lambda line: None, launch="x") == [
        f"mnist-class camu seed {s}: RuntimeError: no room" for s in range(2)]


def test_an_item_that_failed_is_tried_once_per_launch_and_reported_once(monkeypatch, tmp_path):
    """Each worker goes through every item: a failed one (its file unchanged, its lock free) was tried
    again by every worker of the launch and reported by each; a new launch tries it again."""
    from launch import worker

    tried: list[int] = []

    def failing(job, res):
        tried.append(job.seed)
        raise RuntimeError("out of memory")

    jobs = _camu_cells(monkeypatch, tmp_path, range(3), failing)
    reports = [worker.run_stage(jobs, i, 3, launch="a") for i in range(3)]  # three workers, one after another
    assert sorted(tried) == [0, 1, 2] and [len(r) for r in reports] == [3, 0, 0]  # was 9 tries, 9 lines
    assert reports[0][0] == "mnist-class camu seed 0: RuntimeError: out of memory"
    assert [worker.failed_in(j, "a") for j in jobs] == reports[0]  # what run_local reports
    assert worker.run_stage(jobs, 0, 1, launch="b") and sorted(tried) == [0, 0, 1, 1, 2, 2]  # a rerun retries
    monkeypatch.setattr(worker, "compute_cell", lambda job, res: tried.append(job.seed))
    assert worker.run_stage(jobs, 0, 1, launch="c") == []
    assert not list(tmp_path.glob(".*.failed"))  # a success clears the mark


def test_a_sweep_writing_elsewhere_runs_from_a_folder_it_cannot_write(tmp_path, monkeypatch):
    """The launch keys were validated as a whole default config, whose out_dir 'runs' lies in the working
    folder: from a read-only one (a shared install) every sweep stopped with 'out_dir: no write access'."""
    import config

    here = tmp_path / "read-only"
    here.mkdir()
    monkeypatch.chdir(here)
    real_access = os.access
    monkeypatch.setattr(config.os, "access", lambda path, mode: Path(path) != here and real_access(path, mode))
    with pytest.raises(config.ConfigError, match="no write access"):  # the check is live: the folder itself fails
        parse_args([f"--out_dir={here / 'runs'}"])
    options, rest = parse_options(["--launcher=submitit", "--slurm_partition=gpu", f"--out_dir={tmp_path / 'out'}"])
    assert options.slurm.slurm_partition == "gpu" and rest == [f"--out_dir={tmp_path / 'out'}"]


def test_a_requeued_task_still_reports_what_it_failed_before_the_requeue(monkeypatch, tmp_path):
    """SLURM requeues a task that timed out: its second attempt skipped the item its first had failed and
    returned nothing, so the task ended COMPLETED and the cells array (afterok) started on a missing model."""
    from launch import worker

    def failing(job, res):
        raise RuntimeError("out of memory")

    jobs = _camu_cells(monkeypatch, tmp_path, range(2), failing)
    first = worker.run_stage(jobs[:1], 1, 2, launch="a")  # task 1 fails the item, then times out
    assert first == ["mnist-class camu seed 0: RuntimeError: out of memory"]
    monkeypatch.setattr(worker, "compute_cell", lambda job, res: pytest.fail("tried again in the same launch"))
    assert worker.run_stage(jobs[:1], 1, 2, launch="a") == first  # the requeued attempt
    assert worker.run_stage(jobs[:1], 0, 2, launch="a") == []  # another task: reported once, by the one that failed it


def test_a_cell_written_meanwhile_with_other_settings_is_reported_not_taken(monkeypatch, tmp_path):
    """Two sweeps with other settings into one folder, both planned before either wrote the cell: the later
    worker found the file changed and skipped it silently, and its tables then held the other run's cell."""
    from launch import worker
    from report import json_safe

    (job,) = _camu_cells(monkeypatch, tmp_path, range(1),
                         lambda job, res: pytest.fail("computed over the other run's cell"), "--seeds=0")
    cfg, path = job.cfg, job.path
    same = json.dumps({**job.header, "row": {}, "config": json_safe({**cfg.to_dict(), "num_threads": 3})})
    path.write_text(same)  # the same settings (a where-key aside), written by another worker: taken
    assert worker.run_stage([job]) == []
    other_method = {**json.loads(same)["config"], "neggrad_lr": 0.5}  # a sweep of other methods' settings: taken
    path.write_text(json.dumps({**job.header, "row": {}, "config": other_method}))
    assert worker.run_stage([job], launch="x") == []
    path.write_text(json.dumps({**job.header, "row": {}, "config": {**json.loads(same)["config"], "rep_lr": 0.5}}))
    (line,) = worker.run_stage([job], launch="x")
    assert line.startswith(f"mnist-class camu seed 0: written meanwhile by a run with other settings (rep_lr "
                           f"0.5 -> {cfg.rep_lr!r})")
    assert worker.failed_in(job, "x") == line  # marked, so the local launcher's parent reports it (once)
