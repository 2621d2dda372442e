"""The launcher's command-line flags, taken out of reproduce.py's arguments before the grid's.

``--launcher``, ``--workers``, ``--wait`` and ``--dry-run`` are reproduce.py flags; the
``slurm_*`` and ``submitit_cluster`` keys are config keys (so ``--help`` and docs/config.md
list them) but are kept out of the cells' configs: where a cell ran changes none of its numbers,
so a stored cell reads the same whichever launcher computed it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

from config import Config, ConfigError, parse_args

LAUNCHERS = ("local", "submitit")
LAUNCH_KEYS = ("slurm_partition", "slurm_gpus_per_task", "slurm_cpus_per_task", "slurm_mem_gb", "slurm_timeout_min",
               "slurm_array_parallelism", "slurm_additional", "submitit_cluster")
@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "local"
    workers: int = 1
    wait: bool = False
    dry_run: bool = False
    slurm: Config = field(default_factory=Config)  # only its slurm_* / submitit_cluster keys are read


def parse_options(argv: list[str]) -> tuple[LaunchOptions, list[str]]:
    """The launcher's flags and keys, and the arguments left for the grid; ConfigError on a bad one."""
    launcher, workers, wait, dry, slurm_args, rest = "local", 1, False, False, [], []
    for arg in argv:
        key, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if arg == "--wait":
            wait = True
        elif arg in ("--dry-run", "--dry_run"):
            dry = True
        elif key == "launcher":
            if value not in LAUNCHERS:
                raise ConfigError(f"launcher: {value!r} is not one of {', '.join(LAUNCHERS)}")
            launcher = value
        elif key == "workers":
            try:
                workers = int(value)
            except ValueError:
                raise ConfigError(f"workers: expected an integer, got {value!r}") from None
            if workers < 1:
                raise ConfigError(f"workers: {workers} must be at least 1")
        elif key in LAUNCH_KEYS:
            slurm_args.append(arg)
        else:
            rest.append(arg)
    if workers > 1 and launcher != "local":
        raise ConfigError("workers: only with --launcher=local (submitit runs slurm_array_parallelism jobs)")
    if slurm_args and launcher != "submitit":  # else silently dropped: a forgotten --launcher=submitit
        key = slurm_args[0][2:].split("=", 1)[0]
        raise ConfigError(f"{key}: only with --launcher=submitit (the local launcher submits no SLURM job)")
    if wait and launcher != "submitit":
        raise ConfigError("--wait: only with --launcher=submitit (the local launcher always waits)")
    # Only the launch keys are read from this config: its out_dir (checked by validate) is the temp folder,
    # not the default 'runs' under the working directory, which a sweep writing elsewhere need not be able to write.
    slurm = parse_args(slurm_args, base=Config(out_dir=tempfile.gettempdir()))
    return LaunchOptions(launcher, workers, wait, dry, slurm), rest
