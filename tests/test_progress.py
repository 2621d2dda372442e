"""Bars are live on a terminal and sparse in a log file."""

from __future__ import annotations

import contextlib
import io
import time

import pytest
from tqdm import tqdm

import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture()
def restore_tqdm():
    yield
    tqdm.__init__ = progress._PLAIN_INIT


def _run_bar(out: io.StringIO, seconds: float = 0.6, steps: int = 60) -> str:
    for _ in tqdm(range(steps), file=out, desc="epoch 1/1", leave=False, mininterval=0.01):
        time.sleep(seconds / steps)
    return out.getvalue()


def test_log_mode_writes_start_and_end_lines_only(restore_tqdm):
    assert progress.configure_progress(io.StringIO()) is True
    text = _run_bar(io.StringIO())
    assert text.count("\r") <= 2  # the first draw and the final one, nothing between
    assert text.endswith("\n") and "60/60" in text and "it/s" in text  # a kept line, with its rate


def test_terminal_keeps_live_bars(restore_tqdm):
    assert progress.configure_progress(FakeTerminal()) is False
    text = _run_bar(io.StringIO())
    assert text.count("\r") > 10  # redrawn as it goes (mininterval 0.01 s)
    assert not text.endswith("60/60\n")


def test_redirected_main_log_stays_small(data_root, tmp_path, restore_tqdm):
    """A whole run (original training, unlearning, evaluation) with stdout and stderr going to one file, as
    ``python main.py ... > log.txt 2>&1`` leaves them (in this process: starting one costs seconds)."""
    import main

    log = tmp_path / "log.txt"
    args = [f"--data_root={data_root}", "--download=false", "--train_limit=1000", "--test_limit=400",
            "--mia_train_size=100", "--train_epochs=2", "--seeds=0,1", "--compare_retrain=false",
            f"--out_dir={tmp_path / 'own'}", "--num_threads=2"]  # its own out_dir: the original is trained here
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        status = main.main(args)
    text = log.read_text()
    assert status == 0, text[-2000:]
    assert text.count("\r") <= 40, text.count("\r")  # two draws per bar, a handful of bars
    assert "original epoch 2/2" in text and "camu epoch 2/2" in text  # one kept line per epoch
    assert len(text.encode()) < 8000
    assert "\x1b[" not in text  # nested bars drew at their own positions, moving the cursor up in the file
