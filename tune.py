"""Tune one method on one scenario against the retrained model (Optuna, seeded TPE).

    python tune.py [configs/NAME.yaml] --method=M [--trials=N] [--tune_seeds=100,101] [--key=value ...]

The objective is the mean ``avg_gap`` to the retrained model over the tune seeds, which must
be disjoint from the seeds the tables report (``seeds``), so a tuned row is never scored on
the splits it was tuned on. Each trial runs ``main.run_seed`` per tune seed (the retrained
model comes from the per-split cache). The study lives in SQLite under
``OUT_DIR/tuning/DATASET-SCENARIO-METHOD.db``: ``--trials`` counts finished trials (complete, pruned or
failed) already there, so a killed run continues where it stopped, and several processes can
share one study. The best trial's keys go to ``TUNED_DIR/DATASET_SCENARIO/METHOD.yaml`` with
their provenance, and a JSON summary of every trial lies beside the database.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import re
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from concepts import ConceptError
from config import (
    Config,
    ConfigError,
    _shown_path,
    changed_keys,
    check_keys,
    help_text,
    parse_layers,
    print_layers,
    provenance,
    read_yaml,
    shown_changes,
    tuned_against,
    tuned_on_mismatch,
    tuned_path,
    unwritable_folder,
    validate,
    wants_help,
)
from data import DataError
from eval.gaps import salun_avg_gap
from main import (  # also registers the method and attack names validate checks
    check_splits,
    one_line_errors,
    resolve_device,
    run_seed,
)
from models.cache import CacheBusy
from models.resnet import DownloadError
from progress import configure_progress
from report import DT_SHORTFALL_LIMIT, git_commit, json_safe
from storage import write_bytes, write_json
from unlearn import PREFLIGHT, SEARCH_SPACES
from unlearn.search_space import distribution, suggest

USAGE = """usage: python tune.py [PRESET.yaml] --method=M [--trials=N] [--tune_seeds=100,101] [--key=value ...]

Tunes METHOD's search space (declared in unlearn/METHOD.py) on the preset's dataset and scenario:
the objective is the mean avg_gap to the retrained model over the tune seeds. The study is kept in
OUT_DIR/tuning/ and continues when run again; the best keys go to TUNED_DIR/DATASET_SCENARIO/METHOD.yaml,
which --tuned=true layers over the preset. Docs: docs/tuning.md."""
FLAGS = [
    ("--trials=N", "finished trials (complete, failed or pruned) the study should hold (default 30)"),
    ("--tune_seeds=LIST", "split seeds of the objective, disjoint from --seeds (default 100,101)"),
    ("--prune=BOOL", "stop a trial after a tune seed when it is worse than the median of the others there "
                     "(default true)"),
    ("--sampler_seed=N", "seed of the TPE sampler (default 0; offset by the number of the first trial this process "
                         "draws, so a resumed run or a second process draws other points)"),
    ("--objective=NAME", "avg_gap (default: the mean over the tune seeds of each seed's avg_gap) or salun_avg_gap "
                         "(SalUn's Avg. Gap of the tune seeds' means: D_t,r in class removal, MIA-efficacy; needs "
                         "efficacy in mia_attacks and a --tuned_dir of its own)"),
    ("--from_summary=PATH", "start an empty study from the trials of a committed summary (results/tuning/*.json; "
                            "the databases stay out of git), then continue it"),
    ("-h, --help", "this text"),
]
DEFAULT_TRIALS = 30
OBJECTIVES = {"avg_gap": "mean avg_gap", "salun_avg_gap": "SalUn's Avg. Gap"}  # name -> as the tuned file says it
# what salun_avg_gap reads of a row (test_acc in random removal, test_remain_acc in class removal)
SALUN_KEYS = ("forget_acc", "remain_acc", "test_acc", "test_remain_acc", "mia_efficacy")
DEFAULT_TUNE_SEEDS = [100, 101]
# Keys that may differ between two processes working on one study; every other key must match.
FREE_KEYS = ("seeds", "run_name", "out_dir", "data_root", "download", "verify_data", "device", "num_threads",
             "channels_last", "fused_adam", "compile", "bf16", "eval_batch_size", "tuned_dir", "relearn",
             "relearn_lr", "relearn_every", "relearn_eval_remain", "lock_timeout_min")


@dataclass(frozen=True)
class TuneOptions:
    trials: int = DEFAULT_TRIALS
    tune_seeds: tuple[int, ...] = tuple(DEFAULT_TUNE_SEEDS)
    sampler_seed: int = 0
    prune: bool = True
    from_summary: str = ""
    objective: str = "avg_gap"


def _int(key: str, text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if value < low:
        raise ConfigError(f"{key}: {value} must be at least {low}")
    return value


def method_named(argv: list[str]) -> bool:
    """Whether the command line or its preset names the method.

    A study runs for hours and writes a tuned file: a forgotten ``--method`` should not start one
    for the config's default method (CaMU). The concept presets name theirs."""
    if any(arg.startswith("--method=") for arg in argv):
        return True
    return bool(argv) and not argv[0].startswith("--") and "method" in read_yaml(Path(argv[0]), "preset")


def parse_tune_args(argv: list[str]) -> tuple[TuneOptions, Config]:
    """tune.py's own flags, then the config from the rest; every refusal is a ConfigError."""
    own: dict[str, Any] = {}
    rest = []
    for arg in argv:
        key, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key == "trials":
            own["trials"] = _int(key, value, 1)
        elif key == "prune":
            if value not in ("true", "false"):
                raise ConfigError(f"prune: expected true or false, got {value!r}")
            own["prune"] = value == "true"
        elif key == "sampler_seed":
            own["sampler_seed"] = _int(key, value, 0)
        elif key == "objective":
            if value not in OBJECTIVES:
                raise ConfigError(f"objective: {value!r} is not one of {', '.join(OBJECTIVES)}")
            own["objective"] = value
        elif key == "from_summary":
            if not Path(value).is_file():
                raise ConfigError(f"from_summary: {value!r} is not a file (a results/tuning/*.json summary)")
            own["from_summary"] = value
        elif key == "tune_seeds":
            seeds = [_int(key, s.strip(), 0) for s in value.split(",") if s.strip()]
            if not seeds or len(set(seeds)) != len(seeds):
                raise ConfigError(f"tune_seeds: {value!r} must be distinct non-negative integers")
            own["tune_seeds"] = tuple(seeds)
        else:
            rest.append(arg)
    opts = TuneOptions(**own)
    check_keys(rest, ("trials", "tune_seeds", "sampler_seed", "prune", "from_summary", "objective"))
    cfg, shown = parse_layers(rest)  # its lines printed once tune.py's own checks hold too
    if not method_named(rest):
        raise ConfigError(f"method: name the method to tune with --method=M (one of {', '.join(SEARCH_SPACES)})")
    if cfg.method not in SEARCH_SPACES:
        raise ConfigError(f"method: {cfg.method!r} has no search space; tune one of {', '.join(SEARCH_SPACES)}")
    if cfg.tuned:
        raise ConfigError("tuned: tune from the published settings (tuned=false), not over a tuned file")
    if opts.objective == "salun_avg_gap":
        if "efficacy" not in cfg.mia_attacks:
            raise ConfigError("objective: salun_avg_gap compares MIA-efficacy: keep efficacy in mia_attacks "
                              "(e.g. --mia_attacks=efficacy)")
        if tuned_path(cfg).resolve() == tuned_path(dataclasses.replace(cfg, tuned_dir=Config.tuned_dir)).resolve():
            raise ConfigError("tuned_dir: the default (configs/tuned) holds the avg_gap studies' keys (the committed "
                              "results); a salun_avg_gap study writes to a --tuned_dir=DIR of its own")
    problem = unwritable_folder(str(tuned_path(cfg).parent))  # written after hours of trials
    if problem:
        raise ConfigError(f"tuned_dir: {cfg.tuned_dir!r}: {problem}")
    overlap = sorted(set(opts.tune_seeds) & set(cfg.seeds))
    if overlap:
        raise ConfigError(f"tune_seeds: {','.join(map(str, overlap))} also in seeds (the reported seeds "
                          f"{','.join(map(str, cfg.seeds))}); tuning must use other splits")
    refuse_replacing_other_data(cfg)  # also a file naming this study: its database may be gone, or elsewhere
    space, published = SEARCH_SPACES[cfg.method], published_params(cfg)
    for key in outside_space(published, cfg.method):  # queued as a trial: Optuna refuses a choice outside
        if space[key].kind == "categorical":  # (numbers it runs as given)
            raise ConfigError(f"{key}: {published[key]!r} is not one of the search space's choices "
                              f"({', '.join(map(str, space[key].choices))}); the configured setting is tried "
                              "as a trial, so give one of them")
    print_layers(cfg, shown)
    replacing = other_studys_file(cfg, opts)
    if replacing:
        print(replacing, file=sys.stderr)
    return opts, cfg


def study_name(cfg: Config, objective: str = "avg_gap") -> str:
    """DATASET-SCENARIO-METHOD, with the objective after it when it is not avg_gap (another study)."""
    return f"{cfg.dataset}-{cfg.scenario}-{cfg.method}" + ("" if objective == "avg_gap" else f"-{objective}")


def study_path(cfg: Config, objective: str = "avg_gap") -> Path:
    """The study's SQLite file: OUT_DIR/tuning/STUDY_NAME.db."""
    return Path(cfg.out_dir) / "tuning" / f"{study_name(cfg, objective)}.db"


def study_scope(cfg: Config) -> dict[str, Any]:
    """What a study's trials must share: the config without the tuned keys and the free keys."""
    drop = set(FREE_KEYS) | set(SEARCH_SPACES[cfg.method])
    return {k: v for k, v in cfg.to_dict().items() if k not in drop}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tuned_file_study(path: Path) -> str | None:
    """The study database a tuned file's provenance names (``# study: PATH``); "" if none, None if no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return provenance(text, "study") or ""


def other_studys_file(cfg: Config, opts: TuneOptions) -> str:
    """A warning, said before any trial, when the tuned file this study will write holds another study's keys
    ("" when there is no file, or it is this study's, or ``--from_summary`` continues the study that wrote it).

    The default tuned_dir is the repository's ``configs/tuned``, whose files are committed results: a
    two-trial study on a slice, in any out_dir, replaced one without a word (and ``tuned=true`` then laid
    it over full-data runs). The file is still written, where ``tune.py`` always writes it."""
    path = tuned_path(cfg)
    owner = tuned_file_study(path)
    if owner is None:
        return ""
    mine = study_path(cfg, opts.objective).resolve()
    if owner and Path(owner).resolve() == mine:
        return ""
    if opts.from_summary and owner and read_summary(cfg, opts).get("database") == owner:
        return ""
    where = f"study {owner}" if owner else "no study (no '# study:' line)"
    return (f"warning: {_shown_path(path)} holds the tuned keys of {where}; this study ({mine}) will replace them "
            "with its best trial (--tuned_dir=DIR writes elsewhere; git restores a committed file)")


def refuse_replacing_other_data(cfg: Config) -> None:
    """Stop before any trial when the tuned file this study would replace (another study's) was tuned on other
    data or another original: a smoke study on a slice, run without ``--tuned_dir``, replaced a committed
    full-data file with its keys. A study on the same data only warns (``other_studys_file``).

    A file without a ``# tuned on:`` line counts as tuned on its scenario preset (``tuned_on_differences``).
    Checked whatever study the file names, this one included: a file naming this study's database while that
    database is gone (another machine's, or deleted) would otherwise be replaced by a new study on a slice."""
    path = tuned_path(cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    said, other = tuned_on_mismatch(text, cfg)
    if other:
        raise ConfigError(f"tuned_dir: {_shown_path(path)} {said} ({', '.join(other[:4])}); this study would "
                          "replace its keys: give --tuned_dir=DIR (or delete that file)")


def scope_changes(stored: dict[str, Any], scope: dict[str, Any]) -> list[str]:
    """A stored study scope's keys with other values than ``scope``'s, as ``KEY stored -> current`` (the names
    alone for keys the config no longer has)."""
    return shown_changes(stored, scope, set(stored) | set(scope)) or changed_keys(stored, scope)


def open_study(cfg: Config, opts: TuneOptions) -> Any:
    """The study of cfg's (dataset, scenario, method) in OUT_DIR/tuning/, created or continued.

    Trials left RUNNING by a dead process on this host are marked failed here; elsewhere
    Optuna's heartbeat fails them once they stop beating.
    """
    import optuna

    summary = read_summary(cfg, opts) if opts.from_summary else None  # refused before anything is written
    path = study_path(cfg, opts.objective)
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path.resolve()}"
    # a trial worse than the median after its first tune seed(s) stops there (not before 5 trials have run)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5) if opts.prune else optuna.pruners.NopPruner()
    # Two processes opening a new file at once both created its tables ('table studies already exists'), and
    # both could restore a summary into it: the first to take the lock creates (and fills) it, the other finds it.
    with FileLock(f"{path}.lock", timeout=300):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat: experimental
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}},
                                                 heartbeat_interval=60, grace_period=180)
            study = optuna.create_study(study_name=study_name(cfg, opts.objective), storage=storage,
                                        direction="minimize", pruner=pruner, load_if_exists=True)
        scope = study_scope(cfg)
        stored = study.user_attrs.get("scope")
        if stored is None:
            study.set_user_attr("scope", scope)
        elif changed := scope_changes(stored, scope):
            raise ConfigError(f"study {url[10:]} was run with other settings ({', '.join(changed[:5])}); "
                              "use another out_dir or the same settings")
        if "tune_seeds" not in study.user_attrs:
            study.set_user_attr("tune_seeds", list(opts.tune_seeds))
        elif study.user_attrs["tune_seeds"] != list(opts.tune_seeds):
            raise ConfigError(f"tune_seeds: the study was run with {study.user_attrs['tune_seeds']}, "
                              f"not {list(opts.tune_seeds)}")
        if summary is not None:
            restore_trials(study, cfg, opts, summary)
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        dead = (orphaned(study, t) if "pid" not in t.user_attrs
                else t.user_attrs.get("host") == host and not _pid_alive(int(t.user_attrs["pid"])))
        if dead:
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            print(f"trial {t.number}: left running by a process that has ended; marked failed (it counts "
                  "toward --trials, and its parameters are not held against it)")
    study.sampler = failure_aware_tpe(seed=opts.sampler_seed, offset_by_first_trial=True)
    return study


def read_summary(cfg: Config, opts: TuneOptions) -> dict[str, Any]:
    """The summary ``--from_summary`` names, if it is this study's, with these tune seeds and settings."""
    import json

    path = Path(opts.from_summary)
    try:
        summary = json.loads(path.read_text())
        stored = summary.get("scope") or {}
        if not isinstance(summary["trials"], list) or not isinstance(stored, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"from_summary: {path} is not a tune.py summary ({type(exc).__name__})") from None
    name = study_name(cfg, opts.objective)
    if summary.get("study") != name or summary.get("objective", "avg_gap") != opts.objective:
        raise ConfigError(f"from_summary: {path} holds study {summary.get('study')!r}, not {name!r}")
    if list(summary.get("tune_seeds", [])) != list(opts.tune_seeds):
        raise ConfigError(f"from_summary: {path} was run with tune seeds {summary.get('tune_seeds')}, "
                          f"not {list(opts.tune_seeds)}")
    scope = study_scope(cfg)
    changed = scope_changes(stored, scope) if stored else []  # a summary without its scope is not checked
    if changed:
        raise ConfigError(f"from_summary: {path} was run with other settings ({', '.join(changed[:5])})")
    import optuna

    space = SEARCH_SPACES[cfg.method]
    states = optuna.trial.TrialState.__members__  # restore_trials looks each state up by name
    for t in summary["trials"]:  # what restore_trials reads, checked before the study file is touched
        ok = (isinstance(t, dict) and isinstance(t.get("number"), int) and t.get("state") in states
              and isinstance(t.get("params"), dict) and isinstance(t.get("user_attrs", {}), dict))
        if not ok:
            raise ConfigError(f"from_summary: {path} holds a trial that is not one tune.py stored")
        unknown = sorted(set(t["params"]) - set(space))
        if unknown:
            raise ConfigError(f"from_summary: {path}: trial {t['number']} sets {', '.join(unknown)}, which "
                              f"{cfg.method}'s search space no longer holds")
    return summary


def restore_trials(study: Any, cfg: Config, opts: TuneOptions, summary: dict[str, Any]) -> None:
    """Fill an empty study with the trials of a committed summary, so that it can be continued.

    The databases stay out of git; their summaries (results/tuning/*.json) keep every trial's
    parameters, value, state and metrics, which is what TPE, the pruner and ``write_outputs`` read.
    Each restored trial carries ``restored_from``. A study that already holds trials is left as it
    is (run again, the restore is not repeated); a summary of another study, other tune seeds or
    other settings is refused. The summary's trials must have run on the same original and
    retrained models for the continued study to mean anything: same config, and the same kind
    of CPU kernels (docs/reproduce.md).

    Every trial gets the declared distributions, as the live study recorded them, a published
    value outside the space (SSD's alpha 10) included: Optuna's TPE samples the keys jointly
    over the intersection of the trials' distributions, and one widened distribution took that
    key out of it (measured: the next draw differed from the live study's). ``create_trial``
    refuses such a value, so the trial is checked with a distribution that holds it and stored
    with the declared one (the storage call ``Study.add_trial`` makes after its check).
    """
    import optuna

    if study.get_trials(deepcopy=False):
        return
    path, trials = Path(opts.from_summary), summary["trials"]
    space = SEARCH_SPACES[cfg.method]
    source = f"{path.as_posix()} (commit {str(summary.get('git_commit', '?'))[:7]})"
    for t in sorted(trials, key=lambda t: t["number"]):
        state = optuna.trial.TrialState[t["state"]]
        if not state.is_finished():
            continue  # a trial that was running when the summary was written
        params, attrs = t["params"], dict(t["user_attrs"])
        per_seed = attrs.get("objective_per_seed") or attrs.get("avg_gap_per_seed") or []
        frozen = optuna.trial.create_trial(  # checked with distributions that hold the values
            state=state, value=None if state == optuna.trial.TrialState.FAIL else t["value"], params=params,
            distributions={k: distribution(space[k], params[k]) for k in params},
            user_attrs={**attrs, "restored_from": source},
            system_attrs={"fixed_params": params} if attrs.get("published") else {},  # as enqueue_trial left it
            # what trial.report gave the pruner: the mean after the first tune seed
            intermediate_values=({0: float(per_seed[0])} if per_seed and per_seed[0] is not None
                                 and len(opts.tune_seeds) > 1 else {}))  # None: a non-finite gap, not reported
        drop = test_drop_constraint(frozen)[0]  # the constraint the objective set on a complete trial
        if state == optuna.trial.TrialState.COMPLETE and math.isfinite(drop):
            frozen.system_attrs["constraints:test_acc_below_retrain"] = drop
        if t.get("duration_s") is not None:
            frozen.datetime_start = frozen.datetime_complete - datetime.timedelta(seconds=float(t["duration_s"]))
        frozen.distributions = {k: distribution(space[k]) for k in params}  # as the live study recorded them
        study._storage.create_new_trial(study._study_id, template_trial=frozen)
    study.set_user_attr("restored_from", source)


def failure_aware_tpe(seed: int, offset_by_first_trial: bool = False) -> Any:
    """Optuna's TPE sampler, told about the trials that failed because of their parameters.

    ``offset_by_first_trial``: the seed is ``seed`` plus the number of the first trial this
    sampler draws for, set when that trial starts. Alone on a study that is the number of
    trials it held (a resumed run does not replay the first run's random start); two processes
    that open one study at the same moment get different first trials, so they do not draw
    the same random startup points (both would have counted the same trials).

    TPE models complete and pruned trials only and forgets a FAIL, so where part of a space
    diverges it keeps drawing there (RL's Fashion-MNIST class study: 18 of 30 trials at learning
    rates from 0.03 up, all diverged). This sampler shows TPE every FAIL that carries an
    ``error`` (the method raised or diverged: the parameters' doing) as a pruned trial without a
    reported value, which TPE ranks below every complete and pruned trial; a FAIL without one (a
    killed process) is left out as before. The trials themselves stay FAIL in the study.

    The hook is ``Study._get_trials``, which TPE reads its history through (Optuna 4-5); should a
    later Optuna read it otherwise, this is plain TPE again, and tests/test_tune.py, which
    compares the two, fails.
    """
    import copy

    import optuna
    from optuna.trial import TrialState

    class FailuresAsWorst:  # what TPE reads of the study; everything else is the study's own
        def __init__(self, study: Any) -> None:
            self._study = study

        def __getattr__(self, name: str) -> Any:
            return getattr(self._study, name)

        def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[Any]:
            if states is None or TrialState.PRUNED not in states:
                return self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
            trials = self._study._get_trials(deepcopy=deepcopy, states=(*states, TrialState.FAIL),
                                             use_cache=use_cache)
            shown = []
            for t in trials:
                if t.state == TrialState.FAIL and TrialState.FAIL not in states:
                    if "error" not in t.user_attrs:
                        continue
                    t = copy.copy(t)
                    t.state = TrialState.PRUNED
                    t.intermediate_values = {}  # a seed it finished before diverging must not rank it
                shown.append(t)
            return shown

    class Sampler(optuna.samplers.TPESampler):
        first_trial_offset = offset_by_first_trial

        def before_trial(self, study: Any, trial: Any) -> None:
            if self.first_trial_offset:  # TPE's own draws and its random start's, seeded as TPESampler(seed=...)
                self.first_trial_offset = False
                self._rng.rng.seed(seed + trial.number)
                self._random_sampler._rng.rng.seed(seed + trial.number)
            super().before_trial(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return super().sample_relative(FailuresAsWorst(study), trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return super().sample_independent(FailuresAsWorst(study), trial, param_name, param_distribution)

    return Sampler(seed=seed)


ORPHAN_GRACE_S = 10.0  # a live process names itself on its trial within milliseconds of creating it


def orphaned(study: Any, trial: Any) -> bool:
    """Whether a RUNNING trial without host and pid lost its process before the objective's first line.

    A kill between Optuna creating the trial and ``objective`` naming its process leaves a trial
    nobody can claim (and that never beats, so the heartbeat does not fail it either); counted as
    running, it would keep the study short of its trials for good. Once the trial is older than
    ``ORPHAN_GRACE_S`` and still nameless, its process is gone.
    """
    age = (datetime.datetime.now() - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
    if age < ORPHAN_GRACE_S:
        time.sleep(ORPHAN_GRACE_S - age)
    return "pid" not in study._storage.get_trial(trial._trial_id).user_attrs


def test_drop_constraint(trial: Any) -> list[float]:
    """Optuna constraint (feasible at <= 0): D_t at most DT_SHORTFALL_LIMIT points below the retrained model's.

    A tuned method that buys a small avg_gap with a model that no longer classifies the test set
    is not a fair comparison; the sampler steers away from such points and the tuned file is the
    best trial that keeps D_t (``write_outputs``); the objective hands it to Optuna with ``set_constraint``."""
    return [float(trial.user_attrs.get("test_acc_below_retrain", 0.0)) - DT_SHORTFALL_LIMIT]


def seed_standard_error(trial: Any) -> float:
    """Standard error of a trial's objective over its tune seeds (0 with one seed); for SalUn's Avg. Gap, a gap
    of means, that of its per-seed values."""
    attrs = trial.user_attrs
    values = [float(v) for v in attrs.get("objective_per_seed") or attrs.get("avg_gap_per_seed", [])]
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def finished(study: Any) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def make_objective(cfg: Config, opts: TuneOptions, data: Any, original: Any, log: Any) -> Any:
    """The trial function: mean avg_gap over the tune seeds (or SalUn's Avg. Gap, ``opts.objective``); NaN (a
    failed trial) when the method breaks."""
    import optuna

    space = SEARCH_SPACES[cfg.method]
    base = dataclasses.replace(cfg, compare_retrain=True, relearn=False, seeds=list(opts.tune_seeds))
    references: dict[int, dict[str, float]] = {}  # the retrained model's metrics per tune seed, evaluated once

    commit = git_commit()
    salun = opts.objective == "salun_avg_gap"

    def salun_means(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
        """The seeds' means of what SalUn's Avg. Gap reads: the method's and the retrained model's."""
        return ({k: _mean([float(r[k]) for r in rows]) for k in SALUN_KEYS},
                {k: _mean([float(r["retrain"][k]) for r in rows]) for k in SALUN_KEYS})

    def objective_value(rows: list[dict[str, Any]], per_seed: list[float]) -> float:
        """The mean of the seeds' avg_gap, or SalUn's Avg. Gap of the seeds' means (its own definition)."""
        return salun_avg_gap(*salun_means(rows), cfg.scenario) if salun else _mean(per_seed)

    def objective(trial: Any) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("git_commit", commit)  # a resumed study can span commits: each trial says its own
        params = suggest(trial, space)
        rows, per_seed, times = [], [], []  # per_seed: each tune seed's avg_gap; times: its unlearning time
        objective_per_seed: list[float] = []  # salun_avg_gap: each tune seed's own (for the keep rule's noise)
        seed_started = None
        try:
            trial_cfg = validate(dataclasses.replace(base, **params))
            for step, seed in enumerate(opts.tune_seeds):
                seed_started = time.perf_counter()
                row, seed_meta, _ = run_seed(trial_cfg, data, original, seed, references)
                times.append(float(row["unlearn_time_s"]))  # on every trial, pruned and diverged ones too
                trial.set_user_attr("unlearn_time_s", _mean(times))
                if not seed_meta["weights_finite"]:
                    raise FloatingPointError(f"non-finite weights after unlearning (seed {seed}): the method diverged")
                rows.append(row)
                per_seed.append(float(row["avg_gap"]))
                if salun:
                    objective_per_seed.append(salun_avg_gap(row, row["retrain"], cfg.scenario))
                so_far = objective_value(rows, per_seed)
                if opts.prune and step < len(opts.tune_seeds) - 1 and math.isfinite(so_far):
                    trial.report(so_far, step)
                    if trial.should_prune():
                        trial.set_user_attr("avg_gap_per_seed", per_seed)
                        if salun:
                            trial.set_user_attr("objective_per_seed", objective_per_seed)
                        log(f"trial {trial.number} pruned after {step + 1} tune seed(s): {opts.objective} {so_far:.3f}")
                        raise optuna.TrialPruned()
        except (DataError, ConceptError, DownloadError, CacheBusy, KeyboardInterrupt, optuna.TrialPruned):
            raise  # missing data, packages or weights, or a retrained model another process holds, fail every
            # trial alike: not the parameters' doing
        except Exception as exc:  # the method (or a setting it refuses) broke: this trial failed, the study goes on
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            trial.set_user_attr("error", reason)
            if not times and seed_started is not None:  # it raised in its first seed: the seconds until then
                trial.set_user_attr("unlearn_time_s", time.perf_counter() - seed_started)
            log(f"trial {trial.number} failed: {reason}")
            return float("nan")
        scalars = {k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key in sorted(scalars - {"seed"}):
            trial.set_user_attr(key, _mean([float(r[key]) for r in rows]))
        for key in rows[0].get("gap", {}):
            trial.set_user_attr(f"gap_{key}", _mean([float(r["gap"][key]) for r in rows]))
        trial.set_user_attr("avg_gap_per_seed", per_seed)
        if salun:
            trial.set_user_attr("objective_per_seed", objective_per_seed)
            trial.set_user_attr("retrain_means", salun_means(rows)[1])
        drop = _mean([float(r["retrain"]["test_acc"]) - float(r["test_acc"]) for r in rows])
        trial.set_user_attr("test_acc_below_retrain", drop)
        if math.isfinite(drop):
            trial.set_constraint("test_acc_below_retrain", test_drop_constraint(trial)[0])
        value = objective_value(rows, per_seed)
        finite = all(math.isfinite(float(r[k])) for r in rows for k in ("avg_gap", "test_acc", "remain_acc"))
        if not finite or not math.isfinite(value):
            trial.set_user_attr("error", "non-finite metrics (the method diverged)")
            log(f"trial {trial.number} failed: non-finite metrics")
            return float("nan")
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        log(f"trial {trial.number}: {opts.objective} {value:.3f} ({shown})")
        return value

    return objective


def published_params(cfg: Config) -> dict[str, Any]:
    """The config's own values of the method's space keys (the published defaults, unless overridden)."""
    return {key: getattr(cfg, key) for key in SEARCH_SPACES[cfg.method]}


def outside_space(params: dict[str, Any], method: str) -> list[str]:
    """The keys of ``params`` whose value lies outside ``method``'s declared space (SSD's alpha 10)."""
    space = SEARCH_SPACES[method]
    return [key for key, value in params.items() if key in space and not space[key].contains(value)]


def enqueue_published(study: Any, cfg: Config) -> bool:
    """Queue the published setting as a trial unless the study has tried it already.

    Every study then scores the published point on the tune seeds, so its best trial is never
    worse there than the published setting, and the summary shows how far tuning moved. A trial
    of it whose process was killed (FAIL without an ``error``) scored nothing: it is queued again. A value
    outside the space (SSD's alpha 10, left out because it forgets nothing in class removal) is
    queued all the same: Optuna runs a queued value as given, and the sampler keeps drawing
    inside the space. In random removal forgetting almost nothing can be the closest to the
    retrained model, and a tuned row must not lose to the published one for want of trying it.
    """
    import optuna

    published = published_params(cfg)
    tried = [t.params or t.system_attrs.get("fixed_params")  # fixed_params: queued, not started
             for t in study.get_trials(deepcopy=False)  # a FAIL without an error: its process was killed
             if not (t.state == optuna.trial.TrialState.FAIL and "error" not in t.user_attrs)]
    if published in tried:
        return False
    study.enqueue_trial(published, user_attrs={"published": True})
    return True


def trial_summary(t: Any) -> dict[str, Any]:
    """A trial as the JSON summary stores it; NaN and inf (a diverged trial's metrics) as null."""
    return json_safe({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                      "user_attrs": t.user_attrs,
                      "duration_s": t.duration.total_seconds() if t.duration is not None else None})


def _undated(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(("# date:", "# commit:"))]


def commit_line(written: str | None, trials: list[Any]) -> str:
    """The provenance line of the writer's commit, and of the trials' commits where they differ from it
    (``git_commit`` of each trial; trials run before 2026-12-01 did not record theirs)."""
    def short(commit: str) -> str:
        return commit if commit == "unrecorded" else commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")

    written = written or "unrecorded"
    counts: dict[str, int] = {}
    for t in trials:
        key = str(t.user_attrs.get("git_commit") or "unrecorded")
        counts[key] = counts.get(key, 0) + 1
    if set(counts) <= {written}:
        return f"# commit: {written}"
    shown = ", ".join(f"{short(c)} ({n} trial{'s' if n != 1 else ''})" for c, n in counts.items())
    return f"# commit: {written} (written); the trials ran on {shown}"


def write_outputs(cfg: Config, opts: TuneOptions, study: Any, log: Any = print) -> Path | None:
    """The best trial's keys as TUNED_DIR/.../METHOD.yaml (with provenance) and the study's JSON summary."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    # absolute: the tuned file's '# study:' line names it from any folder
    database = study_path(cfg, opts.objective).resolve()
    summary: dict[str, Any] = {
        "study": study_name(cfg, opts.objective), "database": str(database), "objective": opts.objective,
        "tune_seeds": list(opts.tune_seeds), "complete": len(complete), "failed": len(failed),
        "pruned": len(pruned),
        "git_commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scope": study.user_attrs.get("scope"), "best": None,
        **({"restored_from": study.user_attrs["restored_from"]} if "restored_from" in study.user_attrs else {}),
        "trials": [trial_summary(t) for t in trials],
    }
    if not complete:
        write_json(database.with_suffix(".json"), summary)
        log(f"no trial of {study_name(cfg, opts.objective)} completed ({len(failed)} failed, {len(pruned)} pruned): "
            f"no tuned file written; --trials counts every finished trial, so --trials={len(trials) + 1} runs one more")
        return None
    keeps_dt = [t for t in complete if test_drop_constraint(t)[0] <= 0]
    restored_numbers = [t.number for t in trials if "restored_from" in t.user_attrs]
    restored = f"0-{max(restored_numbers)}" if restored_numbers else ""
    best = min(keeps_dt or complete, key=lambda t: t.value)
    published = next((t for t in keeps_dt if t.user_attrs.get("published")), None)
    margin = seed_standard_error(published) if published is not None else 0.0
    kept = published is not None and best is not published and best.value > published.value - margin
    if kept:  # a win inside the published setting's own seed noise is no win
        best = published
    summary["best"] = trial_summary(best)
    summary["best_keeps_test_acc"] = bool(keeps_dt)
    summary["published_kept"] = kept
    write_json(database.with_suffix(".json"), summary)
    header = [
        f"# tuned by tune.py: {cfg.method} on {cfg.dataset}, {cfg.scenario} removal",
        f"# trials: {len(complete) + len(failed) + len(pruned)} finished ({len(complete)} complete, "
        f"{len(failed)} failed, {len(pruned)} pruned)",
        f"# best: trial {best.number}, {OBJECTIVES[opts.objective]} {best.value:.4f} to the retrained model",
        *([f"# objective: {opts.objective} (SalUn's Avg. Gap of the tune seeds' means)"]
          if opts.objective != "avg_gap" else []),
        (f"# D_t: {len(keeps_dt)} complete trials keep D_t within {DT_SHORTFALL_LIMIT:g} points of the retrained "
         f"model's; the best of them is taken" if keeps_dt else
         f"# D_t: no trial keeps D_t within {DT_SHORTFALL_LIMIT:g} points of the retrained model's; "
         f"the best trial is {best.user_attrs.get('test_acc_below_retrain', float('nan')):.2f} points below"),
        *([f"# the published setting is kept: no feasible trial beats it by more than its standard error over "
           f"the tune seeds ({margin:.3f})"] if kept else []),
        f"# tune seeds: {','.join(map(str, opts.tune_seeds))} (reported seeds: {','.join(map(str, cfg.seeds))})",
        f"# tuned on: {json.dumps(tuned_against(cfg))}",
        commit_line(summary["git_commit"], trials),
        f"# date: {summary['date']}",
        f"# study: {summary['database']}",
        *([f"# restored: trials {restored} from {study.user_attrs['restored_from']}, then continued"]
          if restored else []),
    ]
    body = yaml.safe_dump(dict(best.params), sort_keys=False)
    path = tuned_path(cfg)
    text = "\n".join(header) + "\n" + body
    if not path.is_file() or _undated(path.read_text()) != _undated(text):  # same study, same pick: keep the file
        write_bytes(path, text.encode())  # (and its hash, which the tuned cells made from it record)
    log(f"best of {len(complete)} complete trials: {opts.objective} {best.value:.4f} -> {path}")
    return path


class _InterruptWithoutTraceback(logging.Filter):
    """Optuna logs a Ctrl-C'd trial as failed with the whole traceback, then its value (None) on a second
    line; keep the first line's message alone."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: set[str] = set()  # "Trial N" of each trial a Ctrl-C stopped

    def filter(self, record: logging.LogRecord) -> bool:
        trial = re.match(r"Trial \d+ ", str(record.msg))
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
            if trial:
                self.interrupted.add(trial.group())
        elif trial and trial.group() in self.interrupted and "failed with value" in str(record.msg):
            self.interrupted.discard(trial.group())  # once: another study's trial N keeps its lines
            return False
        return True


def quiet_interrupts() -> None:
    """Install ``_InterruptWithoutTraceback`` once, on the logger of Optuna's optimize loop."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _InterruptWithoutTraceback) for f in logger.filters):
        logger.addFilter(_InterruptWithoutTraceback())


def tune(cfg: Config, opts: TuneOptions, log: Any = print) -> Path | None:
    """Run trials until the study holds ``opts.trials`` finished ones; write the tuned file."""
    import optuna
    import torch

    from data import load_dataset
    from models.original import original_model
    from models.runtime import configure_determinism

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_interrupts()
    study = open_study(cfg, opts)
    done = finished(study)
    log(f"study {study_name(cfg, opts.objective)}: {done} finished trials, asked for {opts.trials}")
    if done < opts.trials:
        configure_determinism(cfg.deterministic)
        device = resolve_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        data = load_dataset(cfg.dataset, cfg.data_root, cfg.download, device, cfg.train_limit, cfg.test_limit,
                            verify=cfg.verify_data)
        check_splits(cfg, data.train.labels, opts.tune_seeds)
        if check := PREFLIGHT.get(cfg.method):
            check(cfg)  # e.g. the clip bank's weights, before the original's training
        original, _ = original_model(cfg, data)
        if enqueue_published(study, cfg):  # after data and original: failing there leaves no queued trial
            outside = outside_space(published_params(cfg), cfg.method)
            log("the published setting is queued as a trial"
                + (f" ({', '.join(outside)} outside the space, tried as given)" if outside else ""))
        objective = make_objective(cfg, opts, data, original, log)
        running = optuna.trial.TrialState.RUNNING
        with warnings.catch_warnings():  # the queued published value outside the space is said above
            warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
            while finished(study) + len(study.get_trials(deepcopy=False, states=(running,))) < opts.trials:
                study.optimize(objective, n_trials=1)
    return write_outputs(cfg, opts, study, log)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(USAGE, FLAGS))
        return 0
    configure_progress()
    try:
        opts, cfg = parse_tune_args(argv)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    # A missing concept file, package or weights (its trial is FAIL without an error: not held against
    # its parameters, queued again if published) or lock_timeout_min on the original stops the study in
    # one line; on Ctrl-C Optuna has stored the running trial as failed (the sampler skips it).
    return one_line_errors(lambda: 0 if tune(cfg, opts) is not None else 1,
                           f"{study_path(cfg, opts.objective)} keeps its finished trials; the same command continues "
                           "the study")


if __name__ == "__main__":
    raise SystemExit(main())
