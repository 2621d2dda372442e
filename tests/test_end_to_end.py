"""Whole runs of ``main.run`` on a small MNIST slice, and the command line's data error."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main
from config import validate
from data import generator, make_split
from eval import accuracy, predict
from models.original import original_model

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"seed", "remain_acc", "forget_acc", "test_acc", "test_remain_acc", "test_forget_acc", "mia",
            "unlearn_time_s"}
METRIC_KEYS = ROW_KEYS - {"seed"}


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    """One out_dir for this module's runs: the original model's cache is shared between them."""
    return tmp_path_factory.mktemp("e2e")


def quiet(_line: str) -> None:
    pass


def test_class_removal(small_cfg, shared_out, mnist_small):
    cfg = dataclasses.replace(small_cfg, out_dir=str(shared_out), device="cpu")  # bit-for-bit repeatable on CPU
    doc = main.run(cfg, log=quiet)

    path = cfg.run_dir / "results.json"
    assert path.is_file()
    saved = json.loads(path.read_text())
    assert {"config", "seeds", "mean", "std"} <= set(saved)
    assert saved["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert saved["seeds"] == doc["seeds"]
    assert [row["seed"] for row in saved["seeds"]] == [0]
    for row in saved["seeds"]:
        assert set(row) >= ROW_KEYS
        assert all(math.isfinite(row[k]) for k in METRIC_KEYS)
    assert METRIC_KEYS | {"avg_gap"} <= set(saved["mean"])
    assert set(saved["std"]) == set(saved["mean"])
    assert saved["mean"]["forget_acc"] == pytest.approx(saved["seeds"][0]["forget_acc"])
    assert saved["std"]["remain_acc"] == pytest.approx(0.0)
    assert saved["meta"]["original"]["trained_now"] is True
    assert saved["meta"]["complete"] is True

    # the split saved beside the results is the seed's split
    split = make_split(mnist_small.train.labels, "class", 0, cfg.forget_fraction, 1, generator(0, "split"))
    with np.load(cfg.run_dir / "split-seed0.npz") as saved_split:
        assert np.array_equal(saved_split["forget"], split.forget.numpy())
        assert np.array_equal(saved_split["sample"], split.sample.numpy())

    # the original model (the same weights, from the cache now) knew the forget class; the unlearned one does not
    original, info = original_model(cfg, mnist_small)
    assert not info.trained
    forget_logits = predict(original, mnist_small, mnist_small.train.images[split.forget])
    assert accuracy(forget_logits, mnist_small.train.labels[split.forget]) > 80
    row = saved["seeds"][0]
    assert row["forget_acc"] < 10
    assert row["remain_acc"] > 85
    assert row["test_forget_acc"] < 10
    assert row["test_remain_acc"] > 80
    assert row["unlearn_time_s"] > 0
    assert 0 <= row["mia"] <= 1

    # the retrained oracle on the same split never saw the class; gaps are |metric - retrain|
    assert row["retrain"]["forget_acc"] < 5
    assert row["retrain"]["remain_acc"] > 85
    for key in METRIC_KEYS - {"unlearn_time_s"}:
        assert row["gap"][key] == pytest.approx(abs(row[key] - row["retrain"][key]))
    expected = (row["gap"]["forget_acc"] + row["gap"]["remain_acc"] + row["gap"]["test_acc"]
                + 100 * row["gap"]["mia"]) / 4
    assert row["avg_gap"] == pytest.approx(expected)
    assert saved["mean"]["avg_gap"] == pytest.approx(row["avg_gap"])

    # a second run loads the original model and reproduces every metric but the time
    again = main.run(cfg, log=quiet)
    saved2 = json.loads(path.read_text())
    assert saved2["meta"]["original"]["trained_now"] is False
    assert again["meta"]["original"]["trained_now"] is False
    for first, second in zip(saved["seeds"], saved2["seeds"], strict=True):
        assert {k: v for k, v in first.items() if k != "unlearn_time_s"} == \
               {k: v for k, v in second.items() if k != "unlearn_time_s"}


def test_random_removal_keeps_the_forget_set(small_cfg, shared_out, capsys):
    cfg = validate(dataclasses.replace(small_cfg, scenario="random", forget_fraction=0.1, unlearn_epochs=2,
                                       out_dir=str(shared_out), device="cpu", run_name=""))
    assert cfg.run_name == "mnist-random-camu"
    doc = main.run(cfg, log=quiet)
    row = json.loads((cfg.run_dir / "results.json").read_text())["seeds"][0]
    assert row == doc["seeds"][0]
    assert doc["meta"]["per_seed"][0]["forget"] == 300
    assert row["forget_acc"] > 80
    assert row["remain_acc"] > 80
    assert row["test_acc"] > 80
    # D_t,r and D_t,f are stored (the row is the same in every scenario) but not shown: no class is forgotten
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("seed 0:")]
    assert "forget_acc" in line and "test_acc" in line and "test_remain_acc" not in line
    assert "test_forget_acc" not in line and "test_remain_acc" in row


def test_cli_missing_data(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out_dir = tmp_path / "o"
    assert main.main([f"--data_root={empty}", "--download=false", f"--out_dir={out_dir}"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert str(empty / "MNIST" / "raw") in lines[0]
    assert not out_dir.exists()
    assert list(empty.iterdir()) == []


def test_ctrl_c_keeps_the_finished_seeds_and_says_so_in_one_line(small_cfg, shared_out, monkeypatch, capsys):
    """A Ctrl-C in the second seed: exit 130, results.json holds the first seed (complete: false)."""
    cfg = dataclasses.replace(small_cfg, out_dir=str(shared_out), device="cpu", seeds=[0, 1, 2], unlearn_epochs=1,
                              mia_train_size=200, compare_retrain=False, run_name="interrupted")
    real = main.run_seed

    def second_seed_interrupted(*args, **kwargs):
        if args[3] == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(main, "load_config", lambda argv: cfg)
    monkeypatch.setattr(main, "run_seed", second_seed_interrupted)
    assert main.main([]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    results = cfg.run_dir / "results.json"
    assert last == f"interrupted: 1 of 3 seeds finished, in {results} (complete: false)"
    saved = json.loads(results.read_text())
    assert [row["seed"] for row in saved["seeds"]] == [0] and saved["meta"]["complete"] is False

    # the same run name again (seeds 2, 1): the first run's results.json is kept under its time, its split too
    earlier, split = results.read_bytes(), (cfg.run_dir / "split-seed0.npz").read_bytes()
    monkeypatch.setattr(main, "load_config", lambda argv: dataclasses.replace(cfg, seeds=[2, 1]))
    assert main.main([]) == 130
    kept = list(cfg.run_dir.glob("results-*.json"))
    assert len(kept) == 1 and kept[0].read_bytes() == earlier
    stamp = kept[0].stem.removeprefix("results-")
    assert (cfg.run_dir / f"split-seed0-{stamp}.npz").read_bytes() == split  # was overwritten by a later seed 0
    assert sorted(p.name for p in cfg.run_dir.glob("split-seed*.npz")) == [f"split-seed0-{stamp}.npz",
                                                                          "split-seed2.npz"]
    assert f"kept as {kept[0].name}" in capsys.readouterr().out
    assert [row["seed"] for row in json.loads(results.read_text())["seeds"]] == [2]

    def interrupted_original(*args, **kwargs):
        raise KeyboardInterrupt

    fresh = dataclasses.replace(cfg, run_name="interrupted-early")
    monkeypatch.setattr(main, "load_config", lambda argv: fresh)
    monkeypatch.setattr(main, "original_model", interrupted_original)
    assert main.main([]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted: before the first seed")
    assert not fresh.run_dir.exists()


def test_seeds_are_independent_of_each_other(small_cfg, shared_out):
    """A seed's row is the same whether it runs alone or after another seed."""
    base = dataclasses.replace(small_cfg, out_dir=str(shared_out), device="cpu", unlearn_epochs=1,
                               mia_train_size=200)
    both = main.run(dataclasses.replace(base, seeds=[1, 0], run_name="both"), log=quiet)
    alone = main.run(dataclasses.replace(base, seeds=[0], run_name="alone"), log=quiet)
    strip = [{k: v for k, v in r.items() if k != "unlearn_time_s"} for r in (both["seeds"][1], alone["seeds"][0])]
    assert strip[0] == strip[1]
    assert both["seeds"][0]["seed"] == 1
    pair = [r["remain_acc"] for r in both["seeds"]]
    assert both["mean"]["remain_acc"] == pytest.approx(sum(pair) / 2)
    assert both["std"]["remain_acc"] == pytest.approx(abs(pair[0] - pair[1]) / 2)


def test_retrain_method_is_its_own_reference(small_cfg, shared_out):
    cfg = validate(dataclasses.replace(small_cfg, method="retrain", out_dir=str(shared_out), device="cpu",
                                       run_name=""))
    doc = main.run(cfg, log=quiet)
    row = doc["seeds"][0]
    assert row["forget_acc"] < 5  # trained without the forget class
    assert row["test_remain_acc"] > 80
    assert row["avg_gap"] == 0.0
    assert all(v == 0.0 for v in row["gap"].values())
    assert row["unlearn_time_s"] > 0  # the (cached) training's time, not the load's
    checkpoints = sorted(p.name for p in (shared_out / "checkpoints").iterdir())
    assert sum(name.startswith("retrain-mnist-") for name in checkpoints) >= 1


def test_a_diverged_method_still_writes_its_results(small_cfg, shared_out):
    """SCRUB's max step is unbounded: at a large rate its loss runs to inf and NaN within one pass.
    The run's results.json must still be written (strict JSON has no NaN: those trace values are
    null) with the weights flagged, and no metric a number (an argmax of NaN is class 0: its D_f
    once read 100 %, the faithful MIA 0.5)."""
    cfg = validate(dataclasses.replace(small_cfg, method="scrub", scrub_lr=50.0, scrub_epochs=1, scrub_msteps=1,
                                       scrub_forget_batch_size=16, out_dir=str(shared_out), device="cpu",
                                       run_name="diverged"))
    main.run(cfg, log=quiet)
    saved = json.loads((cfg.run_dir / "results.json").read_text())
    seed_meta = saved["meta"]["per_seed"][0]
    assert seed_meta["weights_finite"] is False
    losses = seed_meta["traces"]["loss_max"]
    assert None in losses and len(losses) == -(-seed_meta["forget"] // 16)
    assert all(v is None or math.isfinite(v) for v in losses)
    # nothing to measure on NaN logits: null, and null means in the summary
    scores = [*(METRIC_KEYS - {"unlearn_time_s"}), *(f"mia_{name}" for name in cfg.mia_attacks)]
    assert math.isfinite(saved["seeds"][0]["unlearn_time_s"])
    assert cfg.mia_attacks and all(saved["seeds"][0][k] is None and saved["mean"][k] is None for k in scores)


_HOLD_RUN = """
import sys, time
from pathlib import Path
from main import run_lock
lock = run_lock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(300)
"""


def test_a_run_folder_that_cannot_be_made_is_one_line(small_cfg, tmp_path, monkeypatch, capsys):
    """Under /proc the config's check (without creating anything) passes and mkdir fails with ENOENT,
    after the original's training: that was a traceback, then one line after the training."""
    import errno

    def refuse(self, *args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    monkeypatch.setattr(main, "original_model", lambda *a, **k: pytest.fail("trained for an out_dir it cannot make"))
    monkeypatch.setattr(main, "load_config", lambda argv: small_cfg)
    assert main.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot create out_dir {small_cfg.out_dir} (No such file")
    with pytest.raises(main.RunFolderError, match="cannot create the run folder"):
        main.run_lock(tmp_path / "runs" / "x")
    assert main.one_line_errors(lambda: main.run_lock(tmp_path / "runs" / "x") and 0, "") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot create the run folder") and "\n" not in err


def test_a_second_run_under_a_busy_run_name_stops_in_one_line(small_cfg, shared_out, monkeypatch, capsys):
    """Two runs under one run name renamed each other's results.json away and overwrote the rest."""
    cfg = dataclasses.replace(small_cfg, out_dir=str(shared_out), device="cpu", seeds=[0], compare_retrain=False,
                              run_name="busy")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_RUN, str(cfg.run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(main, "load_config", lambda argv: cfg)
        with monkeypatch.context() as busy:  # refused before the data is read and the original is trained
            busy.setattr(main, "load_dataset", lambda *a, **k: pytest.fail("the data was read for a busy run"))
            assert main.main([]) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"error: another run is writing {cfg.run_dir}") and "--run_name" in err
        assert not (cfg.run_dir / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main.main([]) == 0  # the lock went with its process
    assert (cfg.run_dir / "results.json").exists()


@pytest.mark.parametrize("error, says", [
    (OSError(28, "No space left on device", "/x/results.json"), "error: No space left on device: /x/results.json"),
    (main.CacheBusy("original-mnist-1.pt: still held after 1.0 min (lock_timeout_min)"),
     "error: original-mnist-1.pt: still held after 1.0 min (lock_timeout_min)"),
    (OSError(38, "Function not implemented"),  # flock on a filesystem without it (fallback_to_soft=False)
     "error: no file lock here (Function not implemented); runs lock their folders and models: use an out_dir "
     "on a filesystem with flock")])
def test_a_full_disk_or_a_busy_checkpoint_is_one_line(error, says, capsys):
    def work() -> int:
        raise error

    assert main.one_line_errors(work, "") == 1
    assert capsys.readouterr().err.strip() == says
    with pytest.raises(FileNotFoundError):  # any other OSError is a bug to see whole
        main.one_line_errors(lambda: open("/nonexistent-dir/x").close() or 0, "")


@pytest.mark.parametrize("command", ["main", "tune", "reproduce"])
def test_every_command_ends_its_work_with_the_same_one_line_errors(command, tmp_path, monkeypatch, capsys):
    """tune.py and reproduce.py kept their own handlers: a full disk while writing the tables or the
    tuned file, or a retrained model held past lock_timeout_min, ended them in a traceback."""
    import reproduce
    import tune
    from data import DataError

    module = {"main": main, "tune": tune, "reproduce": reproduce}[command]
    target = {"main": "run", "tune": "tune", "reproduce": "write_outputs"}[command]
    argv = {"main": [f"--out_dir={tmp_path}"], "tune": ["--method=finetune", f"--out_dir={tmp_path}",
                                                                   f"--tuned_dir={tmp_path / 'tuned'}"],
            "reproduce": ["--table-only", "--datasets=mnist", "--methods=camu", f"--out_dir={tmp_path}"]}[command]
    for error, status, says in (
            (OSError(28, "No space left on device", "/x/t.md"), 1, "error: No space left on device: /x/t.md"),
            (main.CacheBusy("retrain-mnist-1.pt: still held"), 1, "error: retrain-mnist-1.pt: still held"),
            (DataError("MNIST not found"), 1, "data error: MNIST not found"),
            (main.ConfigError("tuned_dir: not writable"), 2, "config error: tuned_dir: not writable")):
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(module, target, fail)
        assert module.main(argv) == status, (command, says)
        assert capsys.readouterr().err.strip() == says
