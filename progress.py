"""Progress bars that suit where they are written: live on a terminal, sparse in a log.

tqdm redraws a bar every 0.1 s. On a terminal that is a live bar; in a file (CI, ``> log
2>&1``, SLURM logs) every redraw is kept, and a 20-epoch run leaves hundreds of KB of
carriage returns. Off a terminal, ``configure_progress`` makes every bar in the process
redraw at most every ``LOG_INTERVAL_S`` seconds and end with a line of its own (with its
rate and elapsed time), so a log gets one line per epoch and an ETA on long phases.
Entry points call it once; the bars themselves stay plain ``tqdm(...)`` calls.

A Ctrl-C lands wherever the work is (deep in a convolution, mostly); ``interrupted`` turns it
into one line saying what was kept, since every result and checkpoint is written atomically.
"""

from __future__ import annotations

import functools
import sys
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
_PLAIN_INIT = tqdm.__init__


def _log_init(self: tqdm, *args: Any, **kwargs: Any) -> None:
    kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0.0), LOG_INTERVAL_S)
    kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 0.0), LOG_INTERVAL_S)
    kwargs["leave"] = True  # the finished bar is the epoch's log line
    kwargs.setdefault("ascii", True)
    kwargs["position"] = 0  # a nested bar at its own position moves the cursor up (ESC[A), noise in a file
    _PLAIN_INIT(self, *args, **kwargs)


functools.update_wrapper(_log_init, _PLAIN_INIT)


def configure_progress(stream: IO[str] | None = None) -> bool:
    """Switch tqdm to log mode when ``stream`` (default: stderr, where tqdm writes) is not a terminal.

    Returns whether log mode is on. Calling it again re-decides (e.g. after a redirect).
    """
    stream = sys.stderr if stream is None else stream
    is_terminal = bool(getattr(stream, "isatty", lambda: False)())
    tqdm.__init__ = _PLAIN_INIT if is_terminal else _log_init  # type: ignore[method-assign]
    return not is_terminal


INTERRUPTED_EXIT = 130  # 128 + SIGINT: what a shell reports for a command stopped with Ctrl-C


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C re-raised with what the interrupted work kept (``str(exc)``)."""


def interrupted(exc: KeyboardInterrupt, kept: str) -> int:
    """Print one line for a Ctrl-C (the work's own account when it gave one, else ``kept``); the exit status."""
    print(f"\ninterrupted: {exc if isinstance(exc, Interrupted) else kept}", file=sys.stderr)
    return INTERRUPTED_EXIT
