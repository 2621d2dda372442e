"""Regenerate the paper's tables and relearning figure: a resumable grid of cells.

    python reproduce.py [--datasets=mnist,fashion_mnist] [--scenarios=class,random]
                        [--methods=camu,retrain,...] [--seeds=0,1,2,3,4] [--out_dir=results]
                        [--relearn=true] [--key=value ...]
    python reproduce.py --table-only [--out_dir=results] [grid filters]

One cell is (dataset, scenario, method, seed). Each finished cell is written atomically to
``OUT_DIR/cells/DATASET-SCENARIO/METHOD-seedSEED.json`` and skipped when the sweep runs
again (a cell stored without its relearning series is computed again when ``--relearn=true``
asks for it), so a killed sweep loses at most the cell it was computing. Original and retrained
models are shared through the checkpoint cache (``OUT_DIR/checkpoints``). Every other
``--key=value`` is a config override applied on top of each scenario's preset in
``configs/``. Tables and figures are rebuilt from the stored cells alone at the end of a
sweep, or with ``--table-only`` without computing anything.

Launchers (``launch/``, docs/cluster.md): the shared models are trained first, then the cells,
in this process (default), by ``--workers=N`` processes (one GPU each), or as SLURM job arrays
(``--launcher=submitit``, with ``--wait`` to stay for the tables); ``--dry-run`` prints the plan.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import launch
from concepts import ConceptError
from config import (
    NUM_CLASSES,
    SCENARIOS,
    Config,
    ConfigError,
    _coerce,
    check_keys,
    help_text,
    parse_args,
    scenario_settings,
    shown_changes,
    tuned_on_warning,
    wants_help,
)
from figures import write_relearning
from launch import CellJob, LaunchOptions, parse_options
from launch.jobs import file_state, own_changes
from main import one_line_errors
from progress import configure_progress
from report import fill_gaps, load_studies, write_tables
from unlearn import METHODS, PREFLIGHT

HERE = Path(__file__).resolve().parent
PAPER_METHODS = ("camu", "retrain", "bad_teacher", "boundary_shrink", "unrolling_sgd", "neggrad")
DEFAULT_GRID = {"datasets": ["mnist", "fashion_mnist", "cifar10", "cifar100"], "scenarios": list(SCENARIOS),
                "methods": list(PAPER_METHODS), "seeds": [0, 1, 2, 3, 4]}
GRID_KEYS = tuple(DEFAULT_GRID)
# Row order of every table and figure, whatever --methods says: the paper's methods as its tables order
# them, then the others in the order they joined the project. A fixed order makes the same cells give the
# same files (a sweep of two methods into results/ rewrote the committed tables with their rows moved).
TABLE_ORDER = (*PAPER_METHODS, "concept_poison", "ssd", "finetune", "neggrad_plus", "random_label",
               "boundary_expand", "scrub", "salun")
TABLE_ORDER += tuple(m for m in METHODS if m not in TABLE_ORDER)
USAGE = """usage: python reproduce.py [--datasets=..] [--scenarios=..] [--methods=..] [--seeds=..] [--out_dir=results]
                          [--relearn=true] [--key=value ...]
       python reproduce.py --table-only [--out_dir=results] [grid filters]

Computes every missing (dataset, scenario, method, seed) cell of the grid, each from the scenario's
preset in configs/ plus the --key=value overrides below, then writes tables and the relearning
figure from the stored cells. Docs: docs/reproduce.md."""
FLAGS = [
    ("--datasets=LIST", f"datasets of the grid (default: {','.join(DEFAULT_GRID['datasets'])})"),
    ("--scenarios=LIST", f"scenarios (default: {','.join(DEFAULT_GRID['scenarios'])})"),
    ("--methods=LIST", f"methods (default, the paper's: {','.join(DEFAULT_GRID['methods'])})"),
    ("--seeds=LIST", "seeds (default: 0,1,2,3,4)"),
    ("--out_dir=DIR", "cells, tables and the checkpoint cache go here (default: results)"),
    ("--table-only", "compute nothing; rebuild tables and figures from the stored cells"),
    ("--relearn=BOOL", "the relearning test per cell (default here: true)"),
    ("--tuned=BOOL", "each method with its tuned keys (configs/tuned/); cells METHOD-tuned-seedN.json, "
                     "rows 'METHOD (tuned)'"),
    ("--launcher=local|submitit", "local (default): this machine; submitit: SLURM job arrays (docs/cluster.md)"),
    ("--workers=N", "local: N worker processes, one GPU each when there are GPUs (default 1: this process)"),
    ("--wait", "submitit: wait for the jobs, then write the tables"),
    ("--dry-run", "print the plan (cells, models, jobs, device-hours) and write nothing"),
    ("--variant=NAME", "a named set of --key=value overrides: cells METHOD-NAME-seedN.json beside the published "
                       "ones, rows 'METHOD (NAME)'; retrain keeps its published cells"),
    ("-h, --help", "this text"),
]


@dataclass(frozen=True)
class Cell:
    dataset: str
    scenario: str
    method: str
    seed: int
    tuned: bool = False  # the method's tuned keys (tuned=true) layered over the preset
    variant: str = ""  # --variant=NAME: a named set of overrides, stored beside the published cells

    def path(self, out_dir: Path) -> Path:
        name = cell_name(self.method, self.tuned, self.variant)
        return out_dir / "cells" / f"{self.dataset}-{self.scenario}" / f"{name}-seed{self.seed}.json"

    def header(self) -> dict[str, Any]:
        """The cell document's header (``tuned`` / ``variant`` only when set, so published cells keep their form)."""
        return {k: v for k, v in asdict(self).items() if k not in ("tuned", "variant") or v}


def cell_name(method: str, tuned: bool, variant: str) -> str:
    """``METHOD[-tuned][-VARIANT]``: the stem of a cell's file and of its run folder."""
    return method + ("-tuned" if tuned else "") + (f"-{variant}" if variant else "")


@dataclass
class Plan:
    """What the command line asked for: the grid (None: not given), overrides and switches."""

    grid: dict[str, list | None]
    overrides: list[str]
    out_dir: Path
    table_only: bool
    variant: str = ""
    absolute_paths: bool = False  # out_dir, data_root, concept_words made absolute (SLURM jobs may start elsewhere)

    def with_absolute_paths(self) -> Plan:
        """This plan for jobs that may start in another folder than this command (SLURM's ``--chdir``,
        a login node's local folder): a relative ``out_dir``, ``data_root`` or ``concept_words`` would name
        another place."""
        return replace(self, out_dir=Path(os.path.abspath(self.out_dir)), absolute_paths=True)

    def axis(self, key: str) -> list:
        value = self.grid[key]
        return DEFAULT_GRID[key] if value is None else value

    @property
    def tuned(self) -> bool:
        """``--tuned=true`` among the overrides (the last one wins, as in the config)."""
        values = [o.split("=", 1)[1] for o in self.overrides if o.startswith("--tuned=")]
        return bool(values) and _coerce("tuned", values[-1], bool)

    def cells(self) -> list[Cell]:
        return [Cell(d, s, m, seed, self.tuned and m != "retrain", "" if m == "retrain" else self.variant)
                for d in self.axis("datasets")
                for s in self.axis("scenarios") for seed in self.axis("seeds") for m in self.axis("methods")]


def _split_list(key: str, text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{key}: give at least one value")
    return items


def parse_plan(argv: list[str]) -> Plan:
    """Grid axes, output folder and switches; every other ``--key=value`` is left for the config."""
    grid: dict[str, list | None] = dict.fromkeys(GRID_KEYS)
    overrides, out_dir, table_only, variant = [], "results", False, ""
    for arg in argv:
        if arg in ("--table-only", "--table_only"):
            table_only = True
            continue
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"argument {arg!r}: expected --key=value or a flag (--table-only, --dry-run, --wait)")
        key, value = arg[2:].split("=", 1)
        if key == "out_dir":
            out_dir = value
        elif key == "variant":
            if not re.fullmatch(r"[a-z0-9_]+", value):
                raise ConfigError(f"--variant: {value!r} must be lower-case letters, digits or _")
            variant = value
        elif key in GRID_KEYS:
            grid[key] = _split_list(key, value)
        elif key in ("dataset", "scenario", "method", "run_name"):
            raise ConfigError(f"--{key}: the grid sets it per cell; use --{key}s=..." if key != "run_name"
                              else "--run_name: cells are named by the grid")
        else:
            overrides.append(arg)
    check_keys(overrides, (*GRID_KEYS, "out_dir", "variant", "launcher", "workers", "table-only", "dry-run", "wait"))
    allowed = {"datasets": NUM_CLASSES, "scenarios": SCENARIOS, "methods": METHODS}
    for key, known in allowed.items():
        for name in grid[key] or []:
            if name not in known:
                raise ConfigError(f"{key}: {name!r} is not one of {', '.join(known)}")
    if grid["seeds"] is not None:
        try:
            seeds = [int(s) for s in grid["seeds"]]
        except ValueError:
            raise ConfigError(f"seeds: expected integers, got {','.join(grid['seeds'])!r}") from None
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ConfigError(f"seeds: {seeds} must be distinct non-negative integers")
        grid["seeds"] = seeds
    if not out_dir:
        raise ConfigError("out_dir: must not be empty")
    return Plan(grid, overrides, Path(out_dir), table_only, variant)


def cell_config(plan: Plan, dataset: str, scenario: str, method: str) -> Config:
    """The scenario's preset, the user's overrides, then the cell's method and folders."""
    preset = HERE / "configs" / f"{dataset}_{scenario}.yaml"
    name = cell_name(method, plan.tuned and method != "retrain", "" if method == "retrain" else plan.variant)
    argv = [str(preset), *plan.overrides, f"--method={method}", f"--out_dir={plan.out_dir}",
            f"--run_name={dataset}-{scenario}-{name}", f"--seeds={','.join(map(str, plan.axis('seeds')))}"]
    if not any(o.startswith("--relearn=") for o in plan.overrides):
        argv.append("--relearn=true")  # the paper's figure is part of reproducing it
    if method == "retrain":
        argv.append("--tuned=false")  # nothing to tune: the published retrain cells serve both
    cfg = parse_args(argv)
    if plan.absolute_paths:
        cfg = replace(cfg, data_root=os.path.abspath(cfg.data_root), concept_words=_absolute(cfg.concept_words))
    return cfg


def _absolute(path: str) -> str:
    return os.path.abspath(path) if path else path


def read_cell(path: Path) -> dict[str, Any] | None:
    """A stored cell, or None when it is missing or unreadable (then it is computed again)."""
    try:
        cell = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    header = ("dataset", "scenario", "method", "seed")
    return cell if isinstance(cell, dict) and isinstance(cell.get("row"), dict) and all(k in cell for k in header) \
        else None


def needs_run(cell: Cell, cfg: Config, out_dir: Path) -> bool:
    """Missing, unreadable, stored without the relearning series that ``cfg`` asks for, or (tuned cells)
    computed from another version of the tuned file than the one there now (a study that went on)."""
    stored = read_cell(cell.path(out_dir))
    if stored is None or (cfg.relearn and not stored["row"].get("relearn")):
        return True
    return cfg.tuned and (stored.get("config") or {}).get("tuned_sha256") != cfg.tuned_sha256


def grid_configs(plan: Plan) -> dict[tuple[str, str, str], Config]:
    """Each (dataset, scenario, method) of the grid's config; a bad override raises ConfigError here."""
    return {(d, s, m): cell_config(plan, d, s, m) for d in plan.axis("datasets")
            for s in plan.axis("scenarios") for m in plan.axis("methods")}


def check_stored_settings(plan: Plan, configs: dict[tuple[str, str, str], Config]) -> None:
    """ConfigError unless the grid's cells can sit beside the cells stored in ``out_dir``.

    A stored cell is skipped, not computed again, and the tables put every cell of a scenario in
    one table with gaps to its retrain cell: so the cells of one (dataset, scenario) folder must
    share the keys that define the data, the split, the original model and the evaluation
    (``config.scenario_settings``), and a stored cell the keys of its own method. Otherwise a run
    with e.g. ``--train_limit=3000`` into a folder of full runs reported the full runs.
    ``configs``: ``grid_configs(plan)``.
    """
    ours = plan.out_dir.resolve() == (HERE / "results").resolve()
    committed = " (results/ holds the committed cells)" if ours else ""
    kinds: dict[tuple[str, str], dict[str, Path]] = {}  # per scenario: one stored cell per distinct setting
    stored: dict[Path, dict[str, Any]] = {}
    for d in plan.axis("datasets"):
        for s in plan.axis("scenarios"):
            kinds[(d, s)] = {}
            for p in sorted((plan.out_dir / "cells" / f"{d}-{s}").glob("*.json")):
                if (c := read_cell(p)) is not None and isinstance(c.get("config"), dict):
                    stored[p] = c["config"]
                    kinds[(d, s)].setdefault(json.dumps(scenario_settings(c["config"]), sort_keys=True, default=str), p)
    for (d, s, _m), cfg in configs.items():
        current = scenario_settings(cfg.to_dict())
        for path in kinds[(d, s)].values():
            changed = shown_changes(scenario_settings(stored[path]), current, current)
            if changed:
                raise ConfigError(f"{path.parent} holds cells computed with other settings ({', '.join(changed[:4])}; "
                                  f"e.g. {path.name}): use another out_dir for them{committed}")
    for cell in plan.cells():
        path = cell.path(plan.out_dir)
        if path not in stored:
            continue
        changed = own_changes(stored[path], configs[(cell.dataset, cell.scenario, cell.method)], cell.method)
        if changed:
            raise ConfigError(f"{path} was computed with other settings of {cell.method} ({', '.join(changed[:4])}): "
                              f"use another out_dir{committed}, or --variant=NAME to store them beside it")


def stored_cells(out_dir: Path, plan: Plan | None = None) -> list[dict[str, Any]]:
    """Every readable cell under ``out_dir``, restricted to the axes ``plan`` names."""
    cells = [c for p in sorted((out_dir / "cells").glob("*/*.json")) if (c := read_cell(p)) is not None]
    return cells if plan is None else [c for c in cells if in_grid(c, plan)]


def in_grid(cell: dict[str, Any], plan: Plan) -> bool:
    """Whether a stored cell lies on the axes ``plan`` names (an axis not given holds every value)."""
    return all(plan.grid[key] is None or cell[field] in plan.grid[key]
               for key, field in (("datasets", "dataset"), ("scenarios", "scenario"), ("methods", "method"),
                                  ("seeds", "seed")))


def cell_jobs(plan: Plan) -> list[CellJob]:
    """Every missing cell of the grid as a launcher job (every config checked first)."""
    configs = grid_configs(plan)
    pending = [c for c in plan.cells() if needs_run(c, configs[(c.dataset, c.scenario, c.method)], plan.out_dir)]
    return [CellJob(c.header(), configs[(c.dataset, c.scenario, c.method)], c.path(plan.out_dir),
                    file_state(c.path(plan.out_dir))) for c in pending]


def preflight_failures(jobs: list[CellJob]) -> dict[tuple[str, str, str], ConceptError]:
    """Per (dataset, scenario, method) of ``jobs`` whose method cannot run here (``unlearn.PREFLIGHT``: the
    clip bank's package, words file or weights), the one-line error its cells would end with. A setting
    that is wrong anywhere (a concept the bank lacks) raises its ConfigError instead."""
    failed: dict[tuple[str, str, str], ConceptError] = {}
    checked: set[tuple[str, str, str]] = set()
    for job in jobs:
        key = _scenario_method(job)
        if key in checked or (check := PREFLIGHT.get(job.cfg.method)) is None:
            continue
        checked.add(key)
        try:
            check(job.cfg)
        except ConceptError as exc:
            failed[key] = exc
    return failed


def _scenario_method(job: CellJob) -> tuple[str, str, str]:
    return job.cfg.dataset, job.cfg.scenario, job.cfg.method


def sweep(plan: Plan, log: Any = print, options: LaunchOptions | None = None) -> launch.Outcome:
    """Compute every missing cell of the grid with the chosen launcher (default: in this process).

    Cells whose method cannot run here (``preflight_failures``) are said before any model is trained
    and left out (no model is trained for them), and the outcome lists them as failed; if no other
    cell is left, the sweep stops there in one line."""
    jobs = cell_jobs(plan)
    failing = preflight_failures(jobs)
    doomed = [job for job in jobs if _scenario_method(job) in failing]
    if doomed and len(doomed) == len(jobs):
        raise next(iter(failing.values()))
    for (d, s, m), exc in failing.items():
        count = sum(_scenario_method(job) == (d, s, m) for job in doomed)
        log(f"warning: {count} {d}-{s} {m} cells cannot run here and are left out, the other cells run: {exc}")
    runnable = [job for job in jobs if _scenario_method(job) not in failing]
    total = len(plan.cells())
    log(f"{total} cells: {total - len(jobs)} stored, {len(runnable)} to compute -> {plan.out_dir}")
    outcome = launch.run(runnable, options or LaunchOptions(), plan.out_dir, log)
    outcome.failures[:0] = [f"{job.label}: {failing[_scenario_method(job)]}" for job in doomed]
    if outcome.finished and not outcome.failures:  # a cell another live run holds the lock of is left to it
        held = [job.label for job in runnable if not job.path.exists()]
        if held:
            log(f"{len(held)} cells left to another run that holds their locks (rerun once it ends): "
                + ", ".join(held))
    return outcome


def write_outputs(plan: Plan, log: Any = print, every_cell: bool = False) -> list[Path]:
    """Tables (Markdown, CSV, LaTeX) and relearning series (CSV, PNG) from the stored cells.

    ``every_cell`` (after a sweep): from every cell stored under ``out_dir``, so a sweep of some
    methods (a variant, a method added later) does not drop the other methods' rows. Otherwise
    (``--table-only``) the grid options filter the cells. Either
    way gaps come from every stored retrain cell, whether the filter keeps retrain rows or not,
    and a scenario's gap, tuning, concept or relearning file that this write does not produce
    (its cells no longer have any) is removed rather than left from an earlier write. Rows follow
    ``TABLE_ORDER``, not the order of ``--methods``: the same cells give the same files.
    """
    every = stored_cells(plan.out_dir)
    cells = [c for c in fill_gaps(every) if every_cell or in_grid(c, plan)]
    if not cells:
        log(f"no stored cells under {plan.out_dir / 'cells'} for this grid")
        return []
    method_order = list(TABLE_ORDER)
    folder = plan.out_dir / "tables"
    written = write_tables(cells, folder, method_order, load_studies(plan.out_dir / "tuning"))
    written += write_relearning(cells, folder, method_order, log)
    for dataset, scenario in sorted({(c["dataset"], c["scenario"]) for c in cells}):
        for name in (f"{dataset}-{scenario}-gaps.md", f"{dataset}-{scenario}-tuning.md",
                     f"{dataset}-{scenario}-concepts.md", f"relearn-{dataset}-{scenario}.csv",
                     f"relearn-{dataset}-{scenario}.png"):
            if folder / name not in written:
                (folder / name).unlink(missing_ok=True)
    for path in written:
        log(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(USAGE, FLAGS, with_presets=False, defaults={"out_dir": "results", "relearn": "true"}))
        return 0
    configure_progress()
    try:
        launch_flags = [a for a in argv if a.startswith(("--launcher=", "--workers="))]  # default values too
        options, argv = parse_options(argv)
        plan = parse_plan(argv)
        if plan.table_only and (options.dry_run or launch_flags):
            raise ConfigError("--table-only computes nothing: it takes no --dry-run, --launcher or --workers")
        if options.launcher == "submitit":
            plan = plan.with_absolute_paths()
        if not plan.table_only:  # a bad override, or settings other than the stored cells', stop here
            configs = grid_configs(plan)
            check_stored_settings(plan, configs)
            for warning in dict.fromkeys(filter(None, map(tuned_on_warning, configs.values()))):
                print(warning, file=sys.stderr)  # once per tuned file laid over other data than its study's
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    def dry_run() -> int:
        launch.dry_run(cell_jobs(plan), len(plan.cells()), options, plan.out_dir)
        return 0

    def work() -> int:
        outcome = sweep(plan, options=options) if not plan.table_only else launch.Outcome()
        if not outcome.finished:
            print(f"tables once the jobs are done: python reproduce.py --table-only {' '.join(argv)}")
            return 0
        write_outputs(plan, every_cell=not plan.table_only)
        for failure in outcome.failures:
            print(f"failed: {failure}", file=sys.stderr)
        return 1 if outcome.failures else 0

    if options.dry_run:
        return one_line_errors(dry_run, "nothing: a dry run writes nothing")
    return one_line_errors(work, f"finished cells stay in {plan.out_dir / 'cells'}; the same command computes "
                                 "only the rest")


if __name__ == "__main__":
    raise SystemExit(main())
