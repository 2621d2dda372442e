"""The CUDA path, checked on the CPU: CPU random streams everywhere, deterministic mode and what
ran recorded, compile that survives the copy, bounded counterfactual memory, no leaked RNG state."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
from config import validate
from data.rng import generator
from models import runtime
from models.cache import cached_model
from models.runtime import cpu_info
from unlearn import bad_teacher
from unlearn.gradient import StopRule

ROOT = Path(__file__).resolve().parents[1]
DRAWS = ("rand", "randn", "randint", "randperm")


def test_the_stream_helper_takes_no_device():
    assert list(inspect.signature(generator).parameters) == ["seed", "purpose"]
    assert generator(0, "x").device.type == "cpu"


@pytest.fixture()
def draws_on_cpu_only(monkeypatch):
    """Every torch.rand* call of the run must use a CPU generator and draw on the CPU."""
    seen = []

    def wrap(name):
        real = getattr(torch, name)

        def checked(*args, **kwargs):
            gen = kwargs.get("generator")
            assert gen is None or gen.device.type == "cpu", f"torch.{name} with a {gen.device} generator"
            assert torch.device(kwargs.get("device") or "cpu").type == "cpu", f"torch.{name} on {kwargs['device']}"
            seen.append(name)
            return real(*args, **kwargs)
        return checked

    for name in DRAWS:
        monkeypatch.setattr(torch, name, wrap(name))
    return seen


@pytest.mark.parametrize("method", ["camu", "random_label", "salun", "boundary_expand", "bad_teacher"])
def test_every_draw_of_a_run_is_on_the_cpu(small_cfg, method, draws_on_cpu_only):
    cfg = validate(dataclasses.replace(small_cfg, method=method, train_epochs=1, compare_retrain=False,
                                       salun_epochs=1, random_label_epochs=1, boundary_expand_epochs=1, run_name=""))
    main.run(cfg, log=lambda _: None)
    assert "randperm" in draws_on_cpu_only  # the check saw the run's draws
    if method == "camu":
        assert {"rand", "randint"} <= set(draws_on_cpu_only)  # counterfactual noise and labels


def test_cifar_augmentation_draws_on_the_cpu(draws_on_cpu_only):
    from data.augment import CifarTransform

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a = CifarTransform()(images, train=True, gen=generator(0, "aug"))
    b = CifarTransform()(images, train=True, gen=generator(0, "aug"))
    assert torch.equal(a, b) and a.shape == (4, 3, 224, 224)


def test_deterministic_mode_and_what_ran_are_recorded(small_cfg):
    cfg = validate(dataclasses.replace(small_cfg, deterministic=True, train_epochs=1, compare_retrain=False,
                                       unlearn_epochs=1, run_name="det"))
    flags = runtime._determinism_flags()
    try:
        main.run(cfg, log=lambda _: None)
        assert torch.are_deterministic_algorithms_enabled()
    finally:  # process-wide switches: a later config (here: later tests) with deterministic=false gets torch's own
        runtime.configure_determinism(False)
    assert runtime._determinism_flags() == flags == runtime.TORCH_DETERMINISM
    meta = json.loads((cfg.run_dir / "results.json").read_text())["meta"]
    assert meta["deterministic"] is True and meta["device_name"] == "cpu"
    assert meta["tf32_matmul"] is False and meta["tf32_cudnn"] is False and meta["cudnn_benchmark"] is False
    assert {"cuda", "cudnn"} <= set(meta) and meta["original"]["trained_on"] == "cpu"
    assert meta["cpu_bf16"] in {"amx", "avx512_bf16", "none"} and meta["cpu"]  # which kernels ran (cpu_info)
    assert json.loads((cfg.run_dir / "results.json").read_text())["config"]["deterministic"] is True


def test_deterministic_mode_after_cuda_started_says_so_once(monkeypatch, capsys):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "x")  # the test's own value, undone after it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(runtime, "_late_cublas_said", False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    runtime.configure_determinism(True)
    runtime.configure_determinism(True)  # a sweep's worker: once per process
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUBLAS_WORKSPACE_CONFIG=:4096:8" in err[0]
    monkeypatch.setattr(runtime, "_late_cublas_said", False)
    runtime.configure_determinism(True)  # the variable is set now (by the first call): nothing to say
    assert capsys.readouterr().err == ""


def test_cache_records_and_reports_the_training_device(tmp_path):
    model = torch.nn.Linear(3, 2)
    lines = []
    info = cached_model(model, tmp_path, "m", {"k": 1}, lambda m: [0.0], {}, log=lines.append)
    assert info.trained and info.trained_on == "cpu"
    path = info.path
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["trained_on"] == "cpu"
    ckpt["trained_on"] = "cuda: NVIDIA H100"
    torch.save(ckpt, path)
    info = cached_model(model, tmp_path, "m", {"k": 1}, lambda m: pytest.fail("retrained"), {}, log=lines.append)
    assert not info.trained and any("trained on cuda: NVIDIA H100; reusing it on cpu" in x for x in lines)


def test_cache_reports_a_model_trained_on_another_kind_of_cpu(tmp_path):
    model = torch.nn.Linear(3, 2)
    lines = []
    path = cached_model(model, tmp_path, "m", {"k": 1}, lambda m: [0.0], {}, log=lines.append).path
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["trained_cpu"] == cpu_info()
    cached_model(model, tmp_path, "m", {"k": 1}, lambda m: pytest.fail("retrained"), {}, log=lines.append)
    assert not any("another kind of CPU" in x for x in lines)  # same CPU: silent
    other = "none" if cpu_info()["cpu_bf16"] != "none" else "amx"
    ckpt["trained_cpu"] = {**ckpt["trained_cpu"], "cpu": "Other CPU", "cpu_bf16": other}
    torch.save(ckpt, path)
    info = cached_model(model, tmp_path, "m", {"k": 1}, lambda m: pytest.fail("retrained"), {}, log=lines.append)
    assert not info.trained and any(f"another kind of CPU (Other CPU, bf16 path {other})" in x for x in lines)


def test_cache_reports_a_model_trained_on_another_thread_count(tmp_path):
    """The thread count moves float reductions: a cache hit from another count is not what training here gives."""
    model = torch.nn.Linear(3, 2)
    lines = []
    path = cached_model(model, tmp_path, "m", {"k": 1}, lambda m: [0.0], {}, log=lines.append).path
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["trained_threads"] == torch.get_num_threads()
    cached_model(model, tmp_path, "m", {"k": 1}, lambda m: pytest.fail("retrained"), {}, log=lines.append)
    assert not any("threads" in x for x in lines)  # same count: silent
    ckpt["trained_threads"] = torch.get_num_threads() + 3
    torch.save(ckpt, path)
    info = cached_model(model, tmp_path, "m", {"k": 1}, lambda m: pytest.fail("retrained"), {}, log=lines.append)
    assert not info.trained
    assert any(f"trained on {torch.get_num_threads() + 3} threads, this run has {torch.get_num_threads()}" in x
               for x in lines)


def test_the_copy_being_unlearned_is_compiled(small_cfg, mnist_small, monkeypatch):
    seen = {}

    def method(model, original, task, cfg):
        seen["unlearned"] = getattr(model, "_compiled_call_impl", None) is not None
        seen["original"] = getattr(original, "_compiled_call_impl", None) is not None
        return {}

    monkeypatch.setattr(main, "get_method", lambda name: method)
    monkeypatch.setattr(main, "evaluate", lambda *a, **k: {"remain_acc": 0.0})
    monkeypatch.setattr(runtime.Runtime, "warm_up", lambda self, model, x: seen.update(warmed=self.compile))
    original = torch.nn.Sequential(torch.nn.Linear(2, 2))
    original.compile()  # as Runtime.prepare leaves the original
    for mode, compiled in (("default", True), ("off", False)):
        seen.pop("warmed", None)
        cfg = validate(dataclasses.replace(small_cfg, compile=mode, compare_retrain=False))
        _, seed_meta, _ = main.run_seed(cfg, mnist_small, original, 0)
        assert seen["unlearned"] is compiled
        assert seen.get("warmed") == (mode if compiled else None)  # a compile's first call falls outside the time
        assert ("warm_up_s" in seed_meta) is compiled


def test_the_warm_up_step_changes_no_number(small_cfg, mnist_small, monkeypatch):
    """On CUDA (or compiled) a throwaway copy takes one training step before the timed unlearning: the original,
    the random streams and so every metric stay as they were without it."""
    from models.original import original_model

    cfg = validate(dataclasses.replace(small_cfg, compare_retrain=False, relearn=False, unlearn_epochs=1))
    original, _ = original_model(cfg, mnist_small)
    before = [t.detach().clone() for t in original.state_dict().values()]
    plain_row, plain_meta, _ = main.run_seed(cfg, mnist_small, original, 0)
    monkeypatch.setattr(runtime.Runtime, "needs_warm_up", lambda self, device: True)
    warm_row, warm_meta, _ = main.run_seed(cfg, mnist_small, original, 0)
    assert "warm_up_s" not in plain_meta and warm_meta["warm_up_s"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, original.state_dict().values(), strict=True))
    plain_row.pop("unlearn_time_s"), warm_row.pop("unlearn_time_s")
    assert warm_row == plain_row


def test_bad_teacher_forks_the_device_generators(monkeypatch):
    cfg = validate(dataclasses.replace(validate(main.Config()), device="cpu"))
    seen = {}

    class Recorded(Exception):
        pass

    def fork(devices=None, enabled=True):
        seen["devices"] = list(devices)
        raise Recorded

    monkeypatch.setattr(torch.random, "fork_rng", fork)
    with pytest.raises(Recorded):
        bad_teacher.incompetent_teacher(cfg, 10, 0, "cuda")
    assert seen["devices"] == [torch.device("cuda")]
    monkeypatch.undo()
    state = torch.random.get_rng_state()
    bad_teacher.incompetent_teacher(cfg, 10, 0, "cpu")
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is left as it was


def test_stop_rule_reads_the_device_once_per_window():
    forgotten, known = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])  # batch accuracy 0 % / 100 %
    y = torch.tensor([0])
    rule = StopRule(0.0, 3)
    assert [rule(out, y) for out in (forgotten, known, known)] == [False, False, True]  # read at the window's end
    assert [rule(out, y) for out in (known, known, known)] == [False, False, False]
    every = StopRule(0.0, 1)
    assert [every(out, y) for out in (known, forgotten)] == [False, True]  # the per-batch rule
    assert StopRule(-1.0, 1)(forgotten, y) is False


PEAK = """
import sys, torch
import data.counterfactual as cf
from data.augment import CifarTransform
from data.datasets import Dataset, ImageSet
from data.splits import Split
cf.CHUNK = 16
n = 512  # 600 MB resident: allocator noise (a few hundred KiB) stays a small share of the measure
g = torch.Generator().manual_seed(0)
imgs = torch.randint(0, 256, (2 * n, 3, 32, 32), dtype=torch.uint8, generator=g)
test = ImageSet(imgs[:4], torch.zeros(4, dtype=torch.long))
data = Dataset("cifar10", ImageSet(imgs, torch.arange(2 * n) % 10), test, 10, CifarTransform())
split = Split(forget=torch.arange(n), remain=torch.arange(n, 2 * n), sample=torch.arange(n, 2 * n))
cf.build_counterfactuals(data, Split(torch.arange(4), torch.arange(4, 8), torch.arange(4, 8)), 0)  # warm-up
def hwm():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = rss()
out = cf.build_counterfactuals(data, split, 0)
resident = out.x_f.numel() * 4 + out.x_cf.numel() * 4
print((hwm() - base) / resident)
"""


def test_counterfactual_peak_memory_is_near_its_resident_size():
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak resident size")
    proc = subprocess.run([sys.executable, "-c", PEAK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "clear_refs" in proc.stderr:
        pytest.skip("cannot reset the peak resident size here")
    assert proc.returncode == 0, proc.stderr
    ratio = float(proc.stdout.strip().splitlines()[-1])
    assert 0.9 <= ratio <= 1.3, ratio


def test_the_gpu_check_script_parses_and_names_what_exists():
    """.ci/gpu runs once per lent GPU, minutes at a time: a typo there would cost the whole loan."""
    import re

    from config import parse_args

    script = ROOT / ".ci" / "gpu"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    named = re.findall(r"(?:tests|configs)/[\w/]+\.(?:py|yaml)", text)
    assert named and all((ROOT / path).exists() for path in named), named
    commands = re.findall(r"python main\.py ((?:[^\n]*\\\n)*[^\n]*)", text)
    assert len(commands) == 4
    for command in commands:
        flags = [f for f in command.replace("\\\n", " ").split() if f.startswith("--") and "$" not in f]
        parse_args(flags)  # each key it gives exists and takes that value
