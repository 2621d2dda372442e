"""Per-seed rows -> mean and std, a printed table and the results.json document."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from config import Config, scenario_settings

RESULT_KEYS = ("remain_acc", "forget_acc", "test_acc", "test_remain_acc", "test_forget_acc", "mia",
               "unlearn_time_s")
HEADERS = {"remain_acc": "D_r", "forget_acc": "D_f", "test_acc": "D_t", "test_remain_acc": "D_t,r",
           "test_forget_acc": "D_t,f", "mia": "MIA", "unlearn_time_s": "time s", "avg_gap": "avg gap"}


def json_safe(x: Any) -> Any:
    """NaN and +-inf -> None (strict JSON has neither), recursively through dicts and lists.

    A diverged method's loss traces are full of them, and its results must still be written.
    """
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def scalar_keys(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """RESULT_KEYS, then every other numeric per-seed key (avg_gap, attack scores), in row order."""
    extra = [k for k, v in rows[0].items() if k not in RESULT_KEYS and k != "seed"
             and isinstance(v, (int, float)) and not isinstance(v, bool)] if rows else []
    return RESULT_KEYS + tuple(extra)


def summarize(rows: list[dict[str, Any]], keys: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """Mean and population standard deviation (numpy's ``std``, ddof=0) of each key over seeds.

    A key that is NaN, null or absent for any seed gives null: an empty test class on a tiny slice,
    a method-specific key on another method's row, or a seed whose model diverged (non-finite
    logits make every accuracy and attack score NaN), which a mean over the other seeds would hide.
    """
    keys = scalar_keys(rows) if keys is None else keys
    mean, std = {}, {}
    for key in keys:
        values = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)
        whole = len(values) > 0 and bool(np.isfinite(values).all())
        mean[key] = json_safe(values.mean()) if whole else None
        std[key] = json_safe(values.std()) if whole else None
    return mean, std


OUTPUT_PATHS = ("results", "configs/tuned")  # what the entry points write into the repository: not code


def git_commit(folder: Path | None = None) -> str | None:
    """The commit of the code that ran, with ``-dirty`` when the tree has changes outside ``OUTPUT_PATHS``
    (a sweep's own cells, or a second tune.py process's tuned file, marked every later record dirty)."""
    here = folder or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){p}" for p in OUTPUT_PATHS)], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def results_document(cfg: Config, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The results.json schema: config, per-seed rows, mean, std (and run metadata)."""
    mean, std = summarize(rows)
    seeds = [json_safe(dict(r)) for r in rows]
    return {"config": cfg.to_dict(), "seeds": seeds, "mean": mean, "std": std, "meta": json_safe(meta)}


def _fmt(x: float | None, key: str) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if key in ("mia", "fr", "fr_attack_accuracy") else f"{x:.2f}"


PER_CLASS = ("test_remain_acc", "test_forget_acc")  # D_t,r and D_t,f: the test set split by forget_class


def class_only(key: str, scenario: str) -> bool:
    """Whether ``key`` is D_t,r or D_t,f outside class removal, where they mean nothing (random removal has no
    forgotten class; ``forget_class`` only splits the test set)."""
    return scenario != "class" and key in PER_CLASS


def format_table(rows: list[dict[str, Any]], scenario: str = "class") -> str:
    """Per-seed rows, then mean +- std, as aligned text; D_t,r and D_t,f (the test set split by
    ``forget_class``) only for class removal, where they mean something, as in the sweep's tables."""
    mean, std = summarize(rows)
    keys = tuple(k for k in RESULT_KEYS if not class_only(k, scenario))
    keys += ("avg_gap",) if rows and "avg_gap" in rows[0] else ()
    header = ["seed"] + [HEADERS[k] for k in keys]
    lines = [[str(r["seed"])] + [_fmt(json_safe(r[k]), k) for k in keys] for r in rows]
    lines.append(["mean"] + [f"{_fmt(mean[k], k)} +- {_fmt(std[k], k)}" for k in keys])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    out = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [header] + lines]
    return "\n".join(out)


# --- paper-style tables over stored sweep cells (reproduce.py)

DATASET_ORDER = ("mnist", "fashion_mnist", "cifar10", "cifar100")
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
PM_LATEX = r" \pm "
LATEX_HEADERS = {"remain_acc": "$D_r$", "forget_acc": "$D_f$", "test_acc": "$D_t$", "test_remain_acc": "$D_{t,r}$",
                 "test_forget_acc": "$D_{t,f}$", "mia": "MIA", "unlearn_time_s": "time (s)"}


def table_keys(scenario: str) -> tuple[str, ...]:
    """The paper's columns: D_r, D_f, D_t (class removal also D_t,r and D_t,f), MIA, time."""
    per_class = PER_CLASS if scenario == "class" else ()
    return ("remain_acc", "forget_acc", "test_acc", *per_class, "mia", "unlearn_time_s")


TUNED = " (tuned)"  # the row name suffix of a tuned method (``row_name``)


def row_name(cell: dict[str, Any]) -> str:
    """A table row's name: the method, `` (VARIANT)`` for a reproduce.py --variant cell, then `` (tuned)`` when
    its stored config layered a tuned file: a tuned variant's row pairs with the variant's published row, and
    the name has no comma (it is a CSV field)."""
    variant = f" ({cell['variant']})" if cell.get("variant") else ""
    return cell["method"] + variant + (TUNED if (cell.get("config") or {}).get("tuned") else "")


def group_cells(cells: list[dict[str, Any]], method_order: list[str] | tuple[str, ...] = ()
                ) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
    """(dataset, scenario) -> row name -> that row's per-seed rows sorted by seed, in table order.

    A tuned method's row (``METHOD (tuned)``) follows the method's published row.
    """
    scenes = sorted({(c["dataset"], c["scenario"]) for c in cells},
                    key=lambda k: (DATASET_ORDER.index(k[0]) if k[0] in DATASET_ORDER else 99, k[0], k[1]))
    order = list(method_order)
    out: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for scene in scenes:
        mine = [c for c in cells if (c["dataset"], c["scenario"]) == scene]
        names = {row_name(c): c["method"] for c in mine}
        ranked = sorted(names, key=lambda n: (order.index(names[n]) if names[n] in order else len(order),
                                              names[n], n != names[n]))
        out[scene] = {n: [c["row"] for c in sorted(mine, key=lambda c: c["seed"]) if row_name(c) == n]
                      for n in ranked}
    return out


def csv_field(text: str) -> str:
    """``text`` as one CSV field: quoted (inner quotes doubled) when it holds a comma, a quote or a line break."""
    return f'"{text.replace(chr(34), 2 * chr(34))}"' if any(ch in text for ch in ',"\n\r') else text


def _pm(mean: float | None, std: float | None, key: str, sep: str) -> str:
    return "-" if mean is None else f"{_fmt(mean, key)}{sep}{_fmt(std, key)}"


def scenario_table(by_method: dict[str, list[dict[str, Any]]], scenario: str, kind: str) -> str:
    """One (dataset, scenario) table as ``markdown``, ``csv`` or ``latex``: rows methods, mean +- std over seeds."""
    keys = table_keys(scenario)
    stats = {m: summarize(rows, keys) for m, rows in by_method.items()}
    if kind == "csv":
        head = ["method", "seeds"] + [f"{HEADERS[k]} {part}" for k in keys for part in ("mean", "std")]
        lines = [",".join(csv_field(h) for h in head)]
        for m, (mean, std) in stats.items():
            values = ["" if x[k] is None else repr(float(x[k])) for k in keys for x in (mean, std)]
            lines.append(",".join([csv_field(m), str(len(by_method[m])), *values]))
        return "\n".join(lines) + "\n"
    if kind == "markdown":
        lines = ["| method | " + " | ".join(HEADERS[k] for k in keys) + " |",
                 "|---|" + "---:|" * len(keys)]
        lines += [f"| {m} | " + " | ".join(_pm(mean[k], std[k], k, " ± ") for k in keys) + " |"
                  for m, (mean, std) in stats.items()]
        return "\n".join(lines) + "\n"
    if kind == "latex":
        lines = [r"\begin{tabular}{l" + "r" * len(keys) + "}", r"\toprule",
                 "method & " + " & ".join(LATEX_HEADERS[k] for k in keys) + r" \\", r"\midrule"]
        lines += [m.replace("_", r"\_") + " & " + " & ".join(
                  "-" if mean[k] is None else "$" + _pm(mean[k], std[k], k, PM_LATEX) + "$" for k in keys) + r" \\"
                  for m, (mean, std) in stats.items()]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"table kind {kind!r} is not one of markdown, csv, latex")


def _same(a: float | None, b: float | None) -> bool:
    from eval.gaps import stored_number

    return a == b or (math.isnan(stored_number(a)) and math.isnan(stored_number(b)))


OWN_REFERENCE = "†"
OWN_REFERENCE_NOTE = (f"{OWN_REFERENCE} gaps against the retrained model that the row's own runs evaluated, which "
                      "differs from the `retrain` row of this table (cells computed on other CPU kernels; "
                      "docs/baselines.md).")


def own_reference(by_method: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The rows whose gaps were taken against another retrained model than the ``retrain`` rows': cells that
    carry their own gaps (``compare_retrain``) from a run whose retrained model evaluated differently."""
    from eval.evaluate import METRICS

    reference = {r.get("seed"): r for r in by_method.get("retrain", [])}
    marked = set()
    for method, rows in by_method.items():
        for r in rows:
            ref, theirs = reference.get(r.get("seed")), r.get("retrain")
            if method != "retrain" and ref is not None and isinstance(theirs, dict) and any(
                    k in theirs and k in ref and not _same(theirs[k], ref[k]) for k in METRICS):
                marked.add(method)
    return marked


def gap_table(by_method: dict[str, list[dict[str, Any]]], scenario: str) -> str | None:
    """Markdown: each method's absolute gap to the retrained model on the same split, and avg_gap
    (mean +- std over seeds; MIA in points as avg_gap counts it), then SalUn's own Avg. Gap
    (``eval.gaps.salun_avg_gap``, one number from the seed means); None when no row holds gaps.
    A row whose gaps are against another retrained model than the table's ``retrain`` row is marked."""
    from eval.gaps import AVG_GAP_KEYS, salun_avg_gap, stored_number

    marked = own_reference(by_method)
    lines = ["| method | " + " | ".join(f"gap {HEADERS[k]}" for k in AVG_GAP_KEYS) + " | avg gap | SalUn avg gap |",
             "|---|" + "---:|" * (len(AVG_GAP_KEYS) + 2)]
    for method, rows in by_method.items():
        with_reference = [r for r in rows if r.get("gap")]  # seeds without a retrain cell have no gaps
        flat = [{"seed": r["seed"], "avg_gap": stored_number(r["avg_gap"]),
                 **{k: stored_number(r["gap"][k]) * (100.0 if k == "mia" else 1.0) for k in AVG_GAP_KEYS}}
                for r in with_reference]
        if flat:
            mean, std = summarize(flat, (*AVG_GAP_KEYS, "avg_gap"))
            name = f"{method} {OWN_REFERENCE}" if method in marked else method
            if len(flat) < len(rows):  # say the row counts fewer seeds than the method has
                name += f" ({len(flat)} of {len(rows)} seeds)"
            salun = json_safe(salun_avg_gap(summarize(with_reference)[0],
                                            summarize([r.get("retrain") or {} for r in with_reference])[0], scenario))
            lines.append(f"| {name} | " + " | ".join(_pm(mean[k], std[k], "", " ± ")
                                                     for k in (*AVG_GAP_KEYS, "avg_gap")) + f" | {_fmt(salun, '')} |")
    if len(lines) == 2:
        return None
    return "\n".join(lines) + "\n" + SALUN_GAP_NOTE + (f"\n{OWN_REFERENCE_NOTE}\n" if marked else "")


SALUN_GAP_NOTE = ("\nSalUn avg gap: as SalUn's Avg. Gap, from the seed means: D_f, D_r, the test accuracy "
                  "(D_t,r in class removal: SalUn's test set leaves the forgotten class out) and MIA-efficacy "
                  "(x 100; its non-members keep the forgotten class's test rows, docs/baselines.md); `-` where a "
                  "mean is missing (no MIA-efficacy, or a seed's NaN). avg gap (the tuning objective): per seed, "
                  "with D_t and the release's MIA.\n")


def same_scenario_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two stored cells share the data, split, original and evaluation keys they both record
    (``config.scenario_settings``); a cell without its config (older files) is taken to."""
    import unlearn  # noqa: F401  (registers the method names that tell a method's own keys apart)

    x, y = scenario_settings(a.get("config") or {}), scenario_settings(b.get("config") or {})
    return all(x[k] == y[k] for k in x.keys() & y.keys())


def fill_gaps(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells run with ``compare_retrain=false`` get their gaps from the stored retrain cell of the same split.

    The retrain cell's row is the retrained model evaluated on that split with that seed,
    which is what ``compare_to_retrain`` would compute again; such rows say so in
    ``gap_source``. Cells that carry their own gaps, cells with no retrain cell, and cells whose
    split or evaluation differs from the retrain cell's (copied in from another folder) stay as they are.
    """
    from eval.evaluate import METRICS
    from eval.gaps import avg_gap, gaps

    retrain = {(c["dataset"], c["scenario"], c["seed"]): c for c in cells if c["method"] == "retrain"}
    out = []
    for cell in cells:
        ref_cell = retrain.get((cell["dataset"], cell["scenario"], cell["seed"]))
        if cell["method"] != "retrain" and "gap" not in cell["row"] and ref_cell is not None \
                and same_scenario_settings(cell, ref_cell):
            ref = ref_cell["row"]
            reference = {k: ref[k] for k in ref if k in METRICS or k.startswith("mia_")}  # as compare_to_retrain
            gap = gaps({k: v for k, v in cell["row"].items() if k in reference}, reference)
            cell = {**cell, "row": {**cell["row"], "retrain": reference, "gap": gap, "avg_gap": avg_gap(gap),
                                    "gap_source": "retrain cell"}}
        out.append(cell)
    return out


CONCEPT_KEYS = ("remain_acc", "forget_acc", "test_remain_acc", "test_forget_acc", "mia", "fr", "fr_attack_accuracy",
                "donor_absorption", "shared_concept_retention", "avg_gap")
CONCEPT_HEADERS = {**HEADERS, "fr": "Fr", "fr_attack_accuracy": "Fr attack acc.", "donor_absorption": "donor abs. %",
                   "shared_concept_retention": "shared ret. %"}


def concept_table(cells: list[dict[str, Any]], dataset: str, scenario: str) -> str | None:
    """Markdown: the concept method's rows beside CaMU and retrain, its own measures, and what each seed chose.

    ``cells`` have their gaps filled already (``fill_gaps``)."""
    mine = [c for c in cells if (c["dataset"], c["scenario"]) == (dataset, scenario)
            and c["method"] in ("concept_poison", "camu", "retrain")]
    if not any(c["method"] == "concept_poison" for c in mine):
        return None
    by_method = group_cells(mine, ("retrain", "camu", "concept_poison"))[(dataset, scenario)]
    lines = ["| method | " + " | ".join(CONCEPT_HEADERS[k] for k in CONCEPT_KEYS) + " |",
             "|---|" + "---:|" * len(CONCEPT_KEYS)]
    for name, rows in by_method.items():
        mean, std = summarize(rows, CONCEPT_KEYS)
        lines.append(f"| {name} | " + " | ".join(_pm(mean[k], std[k], k, " ± ") for k in CONCEPT_KEYS) + " |")
    lines += ["", "| method | seed | donor (rule, via concept) | top concepts (PCBM weight order) |",
              "|---|---:|---|---|"]
    for c in sorted((c for c in mine if c["method"] == "concept_poison"), key=lambda c: (row_name(c), c["seed"])):
        t = (c.get("meta") or {}).get("traces") or {}
        lines.append(f"| {row_name(c)} | {c['seed']} | {t.get('donor')} ({t.get('donor_rule')}, "
                     f"{t.get('donor_concept')}) | {', '.join(t.get('top_concepts') or [])} |")
    return "\n".join(lines) + "\n"


DT_SHORTFALL_LIMIT = 5.0  # points of D_t a tuned method may lose against the retrained model


def load_studies(folder: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """tune.py's study summaries (``DATASET-SCENARIO-METHOD.json``) keyed by (dataset, scenario, method); where a
    method has a study of SalUn's Avg. Gap beside the avg_gap one (``...-salun_avg_gap.json``), the avg_gap one,
    the tables' own measure."""
    import json
    import sys

    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
            scope = doc.get("scope") or {}
        except (OSError, ValueError, AttributeError) as exc:  # truncated, merge-conflicted: the tables go on
            print(f"warning: {path} is not a readable study summary ({type(exc).__name__}); left out of the "
                  "tuning tables", file=sys.stderr)
            continue
        if {"dataset", "scenario", "method"} <= set(scope):
            key = (scope["dataset"], scope["scenario"], scope["method"])
            if key not in out or out[key].get("objective", "avg_gap") != "avg_gap":  # avg_gap's study first
                out[key] = doc
    return out


def tuning_table(by_method: dict[str, list[dict[str, Any]]], dataset: str, scenario: str,
                 studies: dict[tuple[str, str, str], dict[str, Any]],
                 tuned_configs: dict[str, list[dict[str, Any]]] | None = None) -> str | None:
    """Markdown: published against tuned, per method, on the reported seeds, with the two checks tuning must pass
    (tuned avg_gap at most the published one; tuned D_t at most 5 points below the retrained model's) and the
    study each tuned row came from. ``by_method``: one scenario's rows (``group_cells``), gaps filled.
    ``tuned_configs``: method -> the stored configs of its tuned cells; a study whose best keys are not the
    ones those cells ran (a stale summary, another objective's study) says so beside its keys, since the
    row's numbers are not that trial's."""
    tuned_methods = sorted({name[:-len(TUNED)] for name in by_method if name.endswith(TUNED)}
                           | {m for (d, s, m) in studies if (d, s) == (dataset, scenario)})
    if not tuned_methods:
        return None
    retrain_dt = summarize(by_method.get("retrain", []), ("test_acc",))[0]["test_acc"]
    marked = {name.removesuffix(TUNED) for name in own_reference(by_method)}
    lines = ["| method | published avg gap | tuned avg gap | seeds (pub/tuned) | tuned <= published | "
             "tuned - published, paired | tuned D_t | "
             "D_t below retrain | within 5 pts | study: trials (failed, pruned), best objective | tuned keys |",
             "|---|---:|---:|---:|:---:|---:|---:|---:|:---:|---|---|"]
    for method in tuned_methods:
        pub, tun = by_method.get(method, []), by_method.get(method + TUNED, [])
        pub_gap = summarize(pub, ("avg_gap",))[0]["avg_gap"]
        tun_gap, tun_dt = (summarize(tun, ("avg_gap", "test_acc"))[0][k] for k in ("avg_gap", "test_acc"))
        better = "-" if pub_gap is None or tun_gap is None else ("yes" if tun_gap <= pub_gap else "**no**")
        short = None if retrain_dt is None or tun_dt is None else retrain_dt - tun_dt
        within = "-" if short is None else ("yes" if short <= DT_SHORTFALL_LIMIT else "**no**")
        study = studies.get((dataset, scenario, method))
        if study is None:
            provenance, keys = "-", "-"
        else:
            best = study.get("best") or {}
            value = best.get("value")
            finished = study["complete"] + study["failed"] + study.get("pruned", 0)
            objective = study.get("objective", "avg_gap")
            provenance = (f"{finished} ({study['failed']}, {study.get('pruned', 0)}), "
                          + ("-" if value is None else f"{value:.2f}")
                          + ("" if objective == "avg_gap" else f" ({objective})"))
            params = best.get("params") or {}
            keys = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "-"
            if any(k in c and c[k] != v for c in (tuned_configs or {}).get(method, []) for k, v in params.items()):
                keys += " (not the keys the tuned cells ran)"
        name = f"{method} {OWN_REFERENCE}" if method in marked else method
        lines.append(f"| {name} | {_fmt(pub_gap, '')} | {_fmt(tun_gap, '')} | {len(pub)}/{len(tun)} | {better} | "
                     f"{paired_difference(pub, tun)} | "
                     f"{_fmt(tun_dt, 'test_acc')} | {_fmt(short, '')} | {within} | {provenance} | {keys} |")
    return "\n".join(lines) + "\n" + PAIRED_NOTE + (
        f"\n{OWN_REFERENCE_NOTE} D_t below retrain: against the `retrain` row.\n"
        if marked & set(tuned_methods) else "")


PAIRED_NOTE = ("\ntuned - published, paired: the mean over the seeds both rows ran of the per-seed avg gap difference "
               "(each seed is one split for both rows), ± its standard error; over five seeds a difference needs about "
               "2.8 standard errors (a paired t-test at 5 %) before the seeds tell the rows apart.\n")


def paired_difference(published: list[dict[str, Any]], tuned: list[dict[str, Any]]) -> str:
    """The tuned row's avg_gap minus the published row's, seed by seed, as ``mean ± standard error`` ('-' with
    fewer than two seeds both rows ran, or where a gap of one is missing or not finite: a diverged seed,
    which a mean over the others would hide, as ``summarize`` says): rows on the same splits are compared on
    them, so the split-to-split spread that both share drops out."""
    import statistics

    from eval.gaps import stored_number

    theirs = {r.get("seed"): stored_number(r.get("avg_gap")) for r in published}
    diffs = [stored_number(r.get("avg_gap")) - theirs[r.get("seed")] for r in tuned if r.get("seed") in theirs]
    if len(diffs) < 2 or not all(math.isfinite(d) for d in diffs):
        return "-"
    return f"{statistics.fmean(diffs):+.2f} ± {statistics.stdev(diffs) / math.sqrt(len(diffs)):.2f}"


# Keys that shrink a run below the full protocol (data slices, a shorter original); their defaults are the
# full protocol's in every preset.
SCALE_KEYS = ("train_limit", "test_limit", "train_epochs")


def scaled_down_note(cells: list[dict[str, Any]]) -> str:
    """' Not the full protocol: ...' when a scenario's cells set a scale key off its default ('' otherwise), so a
    table from a quick run is not read as the full protocol's."""
    default = Config()
    seen = {f"{k} {c['config'][k]}" for c in cells if isinstance(c.get("config"), dict)
            for k in SCALE_KEYS if k in c["config"] and c["config"][k] != getattr(default, k)}
    return f" Not the full protocol: {', '.join(sorted(seen))}." if seen else ""


def write_tables(cells: list[dict[str, Any]], folder: Path, method_order: list[str] | tuple[str, ...] = (),
                 studies: dict[tuple[str, str, str], dict[str, Any]] | None = None) -> list[Path]:
    """``DATASET-SCENARIO.{md,csv,tex}`` per scenario and ``tables.md`` with all of them; returns the paths.

    ``studies`` (``load_studies``): tune.py's summaries, for ``DATASET-SCENARIO-tuning.md``."""
    from storage import write_bytes

    written, combined = [], ["# Results: mean ± std over seeds", ""]
    cells = fill_gaps(cells)
    for (dataset, scenario), by_method in group_cells(cells, method_order).items():
        stem = folder / f"{dataset}-{scenario}"
        for kind, suffix in (("markdown", ".md"), ("csv", ".csv"), ("latex", ".tex")):
            written.append(write_bytes(stem.with_suffix(suffix),
                                       scenario_table(by_method, scenario, kind).encode()))
        gap_md = gap_table(by_method, scenario)
        if gap_md is not None:
            written.append(write_bytes(folder / f"{dataset}-{scenario}-gaps.md", gap_md.encode()))
        tuned_configs: dict[str, list[dict[str, Any]]] = {}
        for c in cells:  # the cells of this scenario's METHOD (tuned) rows
            if (c["dataset"], c["scenario"]) == (dataset, scenario) and row_name(c) == c["method"] + TUNED:
                tuned_configs.setdefault(c["method"], []).append(c["config"])
        tuning_md = tuning_table(by_method, dataset, scenario, studies or {}, tuned_configs)
        if tuning_md is not None:
            written.append(write_bytes(folder / f"{dataset}-{scenario}-tuning.md", tuning_md.encode()))
        concept_md = concept_table(cells, dataset, scenario)
        if concept_md is not None:
            written.append(write_bytes(folder / f"{dataset}-{scenario}-concepts.md", concept_md.encode()))
        seeds = sorted({r["seed"] for rows in by_method.values() for r in rows})
        counts = ", ".join(f"{m} {len(rows)}" for m, rows in by_method.items())
        combined += [f"## {DATASET_NAMES.get(dataset, dataset)}, {scenario} removal", "",
                     scenario_table(by_method, scenario, "markdown"),
                     f"Seeds {', '.join(map(str, seeds))}; seeds per method: {counts}. Accuracies in %, "
                     "time in seconds (unlearning only; retrain: its training)."
                     + scaled_down_note([c for c in cells if (c["dataset"], c["scenario"]) == (dataset, scenario)]),
                     ""]
        if gap_md is not None:
            combined += ["Absolute gap to the model retrained on D_r for the same split (points; MIA x 100):", "",
                         gap_md]
        if tuning_md is not None:
            combined += [f"Published against tuned (tune.py, tune seeds apart from the reported ones; a tuned row "
                         f"passes when its avg gap is at most the published one and its D_t is at most "
                         f"{DT_SHORTFALL_LIMIT:g} points below the retrained model's):", "", tuning_md]
    written.append(write_bytes(folder / "tables.md", "\n".join(combined).encode()))
    return written
