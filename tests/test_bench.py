"""bench.py on an MNIST slice: every phase timed, the release's figures as ranges, and the same-run
epoch written the release's way."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

import bench


def test_bench_times_every_phase_and_a_release_style_epoch(data_root, tmp_path):
    out = tmp_path / "bench.json"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        status = bench.main([f"--data_root={data_root}", "--download=false", "--train_limit=1500", "--test_limit=500",
                             "--train_epochs=1", "--num_threads=2", f"--out_dir={tmp_path / 'runs'}",
                             f"--bench_out={out}", "--release_epoch=true", "--mia_train_size=300"])
    assert status == 0, text.getvalue()
    doc = json.loads(out.read_text())
    phases = doc["phases"]
    for key in ("train_epoch_s", "split_s", "counterfactual_s", "unlearn_s", "eval_s", "mia_s",
                "release_style_epoch_s"):
        assert phases[key] > 0, key
    assert doc["per_seed_s"] == sum(phases[k] for k in ("split_s", "unlearn_s", "eval_s", "mia_s"))
    low, high = doc["release_s"]["train_epoch_s"]
    assert 0 < low <= high
    printed = text.getvalue()
    assert "release_style_epoch_s" not in printed  # a same-run line, not a row beside the release's figures
    ratio = phases["release_style_epoch_s"] / phases["train_epoch_s"]
    assert f"{ratio:.2f}x" in printed
    # a slice is not what the release timed: no release column, no speed-up against it
    assert f"{low:.1f}-{high:.1f}" not in printed
    assert "(this run: train_limit=1500, test_limit=500, mia_train_size=300)" in printed
    assert bench.unlike_release(bench.parse_args([])) == ""  # the default run: all of MNIST, class removal, CaMU
    for other in ("--unlearn_epochs=10", "--batch_size=256", "--forget_class=3", "--forget_repeat=2"):  # other work,
        assert bench.unlike_release(bench.parse_args([other])) == other[2:]  # which the release's figures did not time
    assert doc["metrics"]["forget_acc"] < 10 and doc["metrics"]["remain_acc"] > 80  # the timed run did forget


def test_bench_rejects_an_unknown_release_epoch_value(capsys):
    assert bench.main(["--release_epoch=maybe"]) == 2
    assert capsys.readouterr().err.strip() == "config error: --release_epoch: 'maybe' is not one of auto, true, false"


@pytest.mark.parametrize("where", ["file/bench.json", "folder"])
def test_bench_out_that_cannot_be_written_stops_before_any_timing(where, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    assert bench.main([f"--bench_out={tmp_path / where}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: --bench_out:") and "\n" not in err


def test_bench_ctrl_c_and_missing_data_are_one_line(data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    assert bench.main([f"--data_root={tmp_path / 'empty'}", "--download=false", f"--out_dir={tmp_path / 'runs'}",
                       f"--bench_out={out}"]) == 1
    assert capsys.readouterr().err.strip().startswith("data error: mnist: files not found in")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "bench", interrupted)
    assert bench.main([f"--data_root={data_root}", f"--bench_out={out}"]) == 130
    assert capsys.readouterr().err.strip() == (f"interrupted: no timings written ({out} is written once every "
                                               "phase is timed)")
    assert not out.exists()
