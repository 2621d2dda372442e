"""The sweep: grid validation, a killed sweep resumes without computing a cell twice, tables, relearning."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import reproduce
from eval.accuracy import accuracy
from eval.predict import predict
from eval.relearn import mean_series, relearn
from figures import PAPER_LEVELS, figure_panels, line_styles, method_colours, write_relearning
from main import split_for_seed
from models import build_model
from report import format_table, load_studies, paired_difference, scenario_table, write_tables

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--datasets=mnist", "--scenarios=class", "--methods=camu,finetune", "--seeds=0,1",
        "--train_limit=1000", "--test_limit=300", "--train_epochs=1", "--unlearn_epochs=1", "--finetune_epochs=1",
        "--mia_train_size=100", "--mia_attacks=efficacy", "--relearn_every=20", "--download=false", "--num_threads=2"]


@pytest.mark.parametrize("bad", [["--datasets=svhn"], ["--methods=camu,nosuch"], ["--scenarios=half"],
                                 ["--seeds=0,0"], ["--train_epochs=0"], ["--nosuch_key=1"], ["--method=camu"]])
def test_bad_grid_is_one_line_exit_2_and_runs_nothing(bad, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert reproduce.main([*bad, f"--out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error:") and "\n" not in err
    assert not out.exists()


def _cells(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "cells" / "mnist-class").glob("*.json"))}


def test_ctrl_c_says_where_the_finished_cells_stay(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "sweep", interrupted)
    assert reproduce.main(["--datasets=mnist", "--scenarios=class", "--methods=camu", "--seeds=0",
                           f"--out_dir={tmp_path}"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: finished cells stay in {tmp_path / 'cells'}; the same command computes only the rest")


def test_killed_sweep_resumes_without_computing_a_cell_twice(data_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    env = {**os.environ, "CAMU_DATA_ROOT": str(data_root)}
    proc = subprocess.Popen([sys.executable, "reproduce.py", *TINY, f"--out_dir={out}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _cells(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # killed in the middle of the sweep, as a user's Ctrl-\ or an OOM kill
    proc.wait()
    before = _cells(out)
    assert 1 <= len(before) < 4, f"the kill should land after the first cell and before the last: {sorted(before)}"

    capsys.readouterr()
    assert reproduce.main([*TINY, f"--out_dir={out}", f"--data_root={data_root}"]) == 0
    log = capsys.readouterr().out
    assert f"4 cells: {len(before)} stored, {4 - len(before)} to compute" in log
    after = _cells(out)
    assert sorted(after) == ["camu-seed0.json", "camu-seed1.json", "finetune-seed0.json", "finetune-seed1.json"]
    for name, content in before.items():
        assert after[name] == content, f"{name} was computed again"

    assert reproduce.main([*TINY, f"--out_dir={out}", f"--data_root={data_root}"]) == 0  # nothing left to do
    assert "4 cells: 4 stored, 0 to compute" in capsys.readouterr().out
    assert _cells(out) == after

    table = (out / "tables" / "mnist-class.md").read_text().strip().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["method", "D_r", "D_f", "D_t", "D_t,r", "D_t,f", "MIA", "time s"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert [r[0] for r in rows] == ["camu", "finetune"]
    for r in rows:
        assert all(re.fullmatch(r"\d+\.\d+ ± \d+\.\d+", c) for c in r[1:]), r
    assert (out / "tables" / "relearn-mnist-class.csv").exists()


def test_cells_stored_with_other_settings_are_refused_not_reported(tmp_path, capsys):
    """A stored cell is skipped and tabled with its scenario's retrain cell: a run whose settings differ
    from the folder's (a smaller slice, another split, another method setting) stops before any work."""
    out = tmp_path / "sweep"
    base = [*TINY, f"--out_dir={out}"]
    plan = reproduce.parse_plan(base)
    for cell in plan.cells():  # as a sweep with these settings stores them
        cfg = reproduce.cell_config(plan, cell.dataset, cell.scenario, cell.method)
        cell.path(out).parent.mkdir(parents=True, exist_ok=True)
        cell.path(out).write_text(json.dumps({**cell.header(), "row": {"remain_acc": 99.0}, "config": cfg.to_dict()}))
    for same in ([], ["--num_threads=1", "--compare_retrain=false", "--relearn=false", "--seeds=0"],
                 ["--methods=finetune", "--variant=fast", "--finetune_lr=0.5"], ["--methods=retrain"]):
        same_plan = reproduce.parse_plan([*base, *same])
        reproduce.check_stored_settings(same_plan, reproduce.grid_configs(same_plan))
    for other, says in ((["--train_limit=500"], "holds cells computed with other settings (train_limit 1000 -> 500; "
                                                 "e.g. "),
                        (["--finetune_lr=0.5"], "other settings of finetune (finetune_lr 0.01 -> 0.5)"),
                        (["--methods=camu", "--variant=c3", "--forget_class=3"], "forget_class 0 -> 3")):
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        capsys.readouterr()
        assert reproduce.main([*base, *other]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("config error: ") and says in err and "\n" not in err, err
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_key_a_stored_cell_predates_counts_as_its_default(tmp_path):
    """The committed localized_top5 cells predate concept_poison_variant: they are the simple variant's, so a run
    asking for the release variant into their folder is refused, not answered with them (it was: keys a stored
    cell lacked were not compared). The same holds for a scenario key."""
    base = [*TINY, "--methods=concept_poison", "--seeds=0", f"--out_dir={tmp_path}", "--variant=top5",
            "--concept_poison_mode=localized", "--concept_poison_top_m=5"]
    plan = reproduce.parse_plan(base)
    (cell,) = plan.cells()
    old = reproduce.cell_config(plan, cell.dataset, cell.scenario, cell.method).to_dict()
    del old["concept_poison_variant"], old["forget_class"]
    cell.path(tmp_path).parent.mkdir(parents=True)
    cell.path(tmp_path).write_text(json.dumps({**cell.header(), "row": {}, "config": old}))
    same = reproduce.parse_plan([*base, "--concept_poison_variant=simple"])
    reproduce.check_stored_settings(same, reproduce.grid_configs(same))
    for other, says in ((["--concept_poison_variant=release"],
                         "concept_poison_variant 'simple' (not recorded: the default) -> 'release'"),
                        (["--forget_class=3"], "forget_class 0 (not recorded: the default) -> 3")):
        plan = reproduce.parse_plan([*base, *other])
        with pytest.raises(reproduce.ConfigError, match=re.escape(says)):
            reproduce.check_stored_settings(plan, reproduce.grid_configs(plan))


def test_a_slurm_launch_names_a_stored_cells_words_file_by_its_place_not_its_spelling(tmp_path, monkeypatch):
    """SLURM jobs get the words file's absolute path; the cell stored by a local run named it relatively."""
    monkeypatch.chdir(tmp_path)
    base = [*TINY, "--methods=concept_poison", "--seeds=0", "--out_dir=sweep", "--concept_words=words.txt"]
    plan = reproduce.parse_plan(base)
    (cell,) = plan.cells()
    cfg = reproduce.cell_config(plan, cell.dataset, cell.scenario, cell.method)
    cell.path(plan.out_dir).parent.mkdir(parents=True)
    cell.path(plan.out_dir).write_text(json.dumps({**cell.header(), "row": {}, "config": cfg.to_dict()}))
    slurm = plan.with_absolute_paths()
    assert reproduce.cell_config(slurm, cell.dataset, cell.scenario, cell.method).concept_words == \
        str(tmp_path / "words.txt")
    reproduce.check_stored_settings(slurm, reproduce.grid_configs(slurm))
    other = reproduce.parse_plan([*base, "--concept_words=other.txt"]).with_absolute_paths()
    with pytest.raises(reproduce.ConfigError, match="concept_words 'words.txt' -> '/"):
        reproduce.check_stored_settings(other, reproduce.grid_configs(other))


def test_a_stored_clip_cell_is_refused_when_its_words_file_was_edited(tmp_path, monkeypatch):
    """The words file's path is the same, its words are not: the stored cell's bank read other concepts."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "words.txt").write_text("stroke\nloop\n")
    base = [*TINY, "--methods=concept_poison", "--seeds=0", "--out_dir=sweep", "--concept_bank=clip",
            "--concept_words=words.txt"]
    plan = reproduce.parse_plan(base)
    (cell,) = plan.cells()
    cfg = reproduce.cell_config(plan, cell.dataset, cell.scenario, cell.method)
    cell.path(plan.out_dir).parent.mkdir(parents=True)
    cell.path(plan.out_dir).write_text(json.dumps({**cell.header(), "row": {}, "config": cfg.to_dict()}))
    reproduce.check_stored_settings(plan, reproduce.grid_configs(plan))
    (tmp_path / "words.txt").write_text("stroke\nloop\ncurve\n")
    with pytest.raises(reproduce.ConfigError, match=f"concept_words_sha256 '{cfg.concept_words_sha256}' -> '"):
        reproduce.check_stored_settings(plan, reproduce.grid_configs(plan))
    older = {k: v for k, v in cfg.to_dict().items() if k != "concept_words_sha256"}  # stored before the hash
    cell.path(plan.out_dir).write_text(json.dumps({**cell.header(), "row": {}, "config": older}))
    reproduce.check_stored_settings(plan, reproduce.grid_configs(plan))


def test_the_committed_results_folder_is_named_as_such_when_it_refuses_a_slice(capsys):
    """reproduce.py's default out_dir is the committed sweep: a first slice run was refused naming a cell
    of a method it did not ask for, without saying what the folder is."""
    assert reproduce.main(["--datasets=mnist", "--scenarios=class", "--methods=camu", "--seeds=0",
                           "--train_limit=3000", f"--out_dir={reproduce.HERE / 'results'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train_limit 0 -> 3000" in err and err.endswith("(results/ holds the committed cells)")


def test_a_cell_without_its_header_is_computed_again_not_tabled(tmp_path):
    path = tmp_path / "camu-seed0.json"
    path.write_text(json.dumps({"scenario": "class", "method": "camu", "seed": 0, "row": {"remain_acc": 1.0}}))
    assert reproduce.read_cell(path) is None  # no dataset: it would have raised a KeyError in the tables
    path.write_text(json.dumps({"dataset": "mnist", "scenario": "class", "method": "camu", "seed": 0, "row": {}}))
    assert reproduce.read_cell(path) is not None


def _fake_cell(dataset: str, scenario: str, method: str, seed: int, remain: float, mia: float) -> dict:
    row = {"seed": seed, "remain_acc": remain, "forget_acc": 0.0, "test_acc": 90.0, "test_remain_acc": 99.0,
           "test_forget_acc": 0.0, "mia": mia, "unlearn_time_s": 2.0 + seed,
           "gap": {"forget_acc": 0.0, "remain_acc": remain - 90.0, "test_acc": 1.0, "mia": 0.02},
           "avg_gap": (remain - 90.0 + 1.0 + 2.0) / 4,
           "relearn": {"step": [0, 100, 150], "gap": [remain, remain - 10 * seed, remain - 20], "lr": 1e-3}}
    return {"dataset": dataset, "scenario": scenario, "method": method, "seed": seed, "row": row}


def test_a_diverged_cells_null_relearning_gaps_read_as_nan():
    """A diverged model's relearning gaps are NaN, stored as null: the series' mean crashed on them."""
    from figures import relearning_series, series_csv

    cells = [_fake_cell("mnist", "class", "camu", seed, 99.0, 0.25) for seed in (0, 1)]
    cells[1]["row"]["relearn"] = {**cells[1]["row"]["relearn"], "gap": [None, None, 50.0]}
    (steps, mean, std, n), = relearning_series(cells)[("mnist", "class")].values()
    assert steps == [0, 100, 150] and n == 2
    assert math.isnan(mean[0]) and math.isnan(mean[1]) and mean[2] == pytest.approx((79.0 + 50.0) / 2)
    assert "camu,0,nan," in series_csv({"camu": (steps, mean, std, n)})


def test_tables_mean_pm_std_in_three_formats(tmp_path):
    cells = [_fake_cell("mnist", "class", "retrain", 0, 90.0, 0.2),
             _fake_cell("mnist", "class", "retrain", 1, 92.0, 0.3),
             _fake_cell("mnist", "class", "camu", 0, 99.0, 0.25), _fake_cell("mnist", "random", "camu", 0, 98.0, 0.5)]
    paths = write_tables(cells, tmp_path, ["camu", "retrain"])
    names = sorted(p.name for p in paths)
    assert names == ["mnist-class-gaps.md", "mnist-class.csv", "mnist-class.md", "mnist-class.tex",
                     "mnist-random-gaps.md", "mnist-random.csv", "mnist-random.md", "mnist-random.tex", "tables.md"]
    gap_rows = (tmp_path / "mnist-class-gaps.md").read_text().splitlines()
    assert gap_rows[0] == "| method | gap D_f | gap D_r | gap D_t | gap MIA | avg gap | SalUn avg gap |"
    # no MIA-efficacy in these rows: no SalUn gap
    assert gap_rows[3] == "| retrain | 0.00 ± 0.00 | 1.00 ± 1.00 | 1.00 ± 0.00 | 2.00 ± 0.00 | 1.00 ± 0.25 | - |"
    md = (tmp_path / "mnist-class.md").read_text().splitlines()
    assert md[2].startswith("| camu | 99.00 ± 0.00 |")
    assert md[3] == ("| retrain | 91.00 ± 1.00 | 0.00 ± 0.00 | 90.00 ± 0.00 | 99.00 ± 0.00 | 0.00 ± 0.00 "
                     "| 0.250 ± 0.050 | 2.50 ± 0.50 |")
    assert "D_t,r" not in (tmp_path / "mnist-random.md").read_text()  # random removal: no per-class test columns
    rows = list(csv.DictReader(io.StringIO((tmp_path / "mnist-class.csv").read_text())))
    assert [r["method"] for r in rows] == ["camu", "retrain"]
    assert float(rows[1]["D_r mean"]) == 91.0 and float(rows[1]["D_r std"]) == 1.0 and rows[1]["seeds"] == "2"
    tex = (tmp_path / "mnist-class.tex").read_text()
    assert r"retrain & $91.00 \pm 1.00$" in tex and tex.rstrip().endswith(r"\end{tabular}")
    with pytest.raises(ValueError):
        scenario_table({"camu": [cells[2]["row"]]}, "class", "html")
    combined = (tmp_path / "tables.md").read_text()
    assert "Not the full protocol" not in combined  # cells without a config: nothing to say
    for c in cells[2:]:  # a quick run on a slice says so under its scenario's table, the full one does not
        c["config"] = {"train_limit": 2000, "test_limit": 0, "train_epochs": 1 if c["scenario"] == "class" else 20}
    write_tables(cells, tmp_path, ["camu", "retrain"])
    combined = (tmp_path / "tables.md").read_text().split("## MNIST, random removal")
    assert "Not the full protocol: train_epochs 1, train_limit 2000." in combined[0]
    assert "Not the full protocol: train_limit 2000." in combined[1] and "train_epochs" not in combined[1]


def test_variant_cells_sit_beside_the_published_ones_and_take_gaps_from_retrain_cells(tmp_path):
    plan = reproduce.parse_plan(["--datasets=mnist", "--scenarios=class", "--methods=concept_poison,retrain",
                                 "--seeds=0", "--variant=random", "--concept_poison_labels=random"])
    cells = {c.method: c for c in plan.cells()}
    assert cells["concept_poison"].path(tmp_path).name == "concept_poison-random-seed0.json"
    assert cells["retrain"].path(tmp_path).name == "retrain-seed0.json"  # retrain keeps its published cells
    assert cells["concept_poison"].header()["variant"] == "random" and "variant" not in cells["retrain"].header()
    assert "--concept_poison_labels=random" in plan.overrides
    with pytest.raises(reproduce.ConfigError, match="variant"):
        reproduce.parse_plan(["--variant=Bad Name"])
    retrain = _fake_cell("mnist", "class", "retrain", 0, 90.0, 0.2)
    mine = {"dataset": "mnist", "scenario": "class", "method": "concept_poison", "seed": 0, "variant": "random",
            "row": {"seed": 0, "remain_acc": 95.0, "forget_acc": 4.0, "test_acc": 88.0, "test_remain_acc": 97.0,
                    "test_forget_acc": 2.0, "mia": 0.3, "unlearn_time_s": 1.0, "fr": 0.75, "donor_absorption": 90.0,
                    "shared_concept_retention": 96.0},
            "meta": {"traces": {"donor": 6, "donor_rule": "confusion", "donor_concept": "loops",
                                "top_concepts": ["loops", "tall"]}}}
    write_tables([retrain, mine], tmp_path, ["retrain", "concept_poison"])
    gaps = (tmp_path / "mnist-class-gaps.md").read_text()
    # |95-90|, |4-0|, |88-90|, |0.3-0.2| x 100 -> avg (5 + 4 + 2 + 10) / 4
    assert "| concept_poison (random) | 4.00 ± 0.00 | 5.00 ± 0.00 | 2.00 ± 0.00 | 10.00 ± 0.00 | 5.25 ± 0.00 |" in gaps
    concepts = (tmp_path / "mnist-class-concepts.md").read_text()
    assert "| concept_poison (random) | 95.00 ± 0.00 |" in concepts and "0.750 ± 0.000" in concepts
    assert "| concept_poison (random) | 0 | 6 (confusion, loops) | loops, tall |" in concepts


def _table_rows(path: Path) -> list[str]:
    return [line.split("|")[1].strip() for line in path.read_text().splitlines()[2:] if line.startswith("|")]


def test_a_sweep_of_some_methods_keeps_every_row_and_gaps_come_from_retrain_cells(tmp_path):
    """A sweep of one method (a variant, a method added later) rewrote the tables with its rows alone;
    a table filtered to a method had no gaps, as the filter took the retrain cells away."""
    for method, variant, remain in (("retrain", "", 90.0), ("camu", "", 91.0), ("ssd", "", 95.0),
                                    ("concept_poison", "random", 93.0)):
        row = {"seed": 0, "remain_acc": remain, "forget_acc": 0.0, "test_acc": 90.0, "test_remain_acc": 99.0,
               "test_forget_acc": 0.0, "mia": 0.25, "unlearn_time_s": 1.0}
        path = tmp_path / "cells" / "mnist-class" / f"{reproduce.cell_name(method, False, variant)}-seed0.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"dataset": "mnist", "scenario": "class", "method": method, "seed": 0,
                                    **({"variant": variant} if variant else {}), "row": row}))
    tables = tmp_path / "tables"
    grid = ["--datasets=mnist", "--scenarios=class", "--seeds=0", f"--out_dir={tmp_path}"]

    reproduce.write_outputs(reproduce.parse_plan([*grid, "--methods=ssd"]), log=lambda *_: None, every_cell=True)
    assert _table_rows(tables / "mnist-class.md") == ["camu", "retrain", "concept_poison (random)", "ssd"]
    first = {p.name: p.read_bytes() for p in tables.iterdir()}
    # the same cells after a sweep of other methods, in another order: the same files (rows in TABLE_ORDER)
    reproduce.write_outputs(reproduce.parse_plan([*grid, "--methods=retrain,ssd,camu"]), log=lambda *_: None,
                            every_cell=True)
    assert {p.name: p.read_bytes() for p in tables.iterdir()} == first
    assert "| ssd | 0.00 ± 0.00 | 5.00 ± 0.00 | 0.00 ± 0.00 | 0.00 ± 0.00 | 1.25 ± 0.00 |" in (
        tables / "mnist-class-gaps.md").read_text()

    reproduce.write_outputs(reproduce.parse_plan([*grid, "--methods=concept_poison"]), log=lambda *_: None)
    assert _table_rows(tables / "mnist-class.md") == ["concept_poison (random)"]
    assert _table_rows(tables / "mnist-class-gaps.md") == ["concept_poison (random)"]
    assert "| 3.00 ± 0.00 |" in (tables / "mnist-class-gaps.md").read_text()

    reproduce.write_outputs(reproduce.parse_plan([*grid, "--methods=retrain"]), log=lambda *_: None)
    assert _table_rows(tables / "mnist-class.md") == ["retrain"]
    assert not (tables / "mnist-class-gaps.md").exists()  # not left from the write before, beside a table without it


def test_main_s_table_shows_the_per_class_test_columns_for_class_removal_only():
    rows = [{"seed": s, "remain_acc": 99.0, "forget_acc": 1.0, "test_acc": 90.0, "test_remain_acc": 99.0,
             "test_forget_acc": 0.5, "mia": 0.25, "unlearn_time_s": 1.0} for s in (0, 1)]
    assert "D_t,r" in format_table(rows, "class").splitlines()[0]
    assert format_table(rows, "random").splitlines()[0].split() == ["seed", "D_r", "D_f", "D_t", "MIA", "time", "s"]


def test_relearning_series_mean_over_seeds_csv_and_png(tmp_path):
    cells = [_fake_cell("mnist", "random", "retrain", s, 90.0, 0.5) for s in (0, 1)]
    steps, mean, std = mean_series([c["row"]["relearn"] for c in cells])
    assert steps == [0, 100, 150]
    assert mean.tolist() == [90.0, 85.0, 70.0] and std.tolist() == [0.0, 5.0, 0.0]
    paths = write_relearning(cells, tmp_path, ["retrain"], log=lambda *_: None)
    lines = (tmp_path / "relearn-mnist-random.csv").read_text().splitlines()
    assert lines[0] == "method,step,gap_mean,gap_std,seeds" and lines[2] == "retrain,100,85.0,5.0,2"
    write_relearning(cells[:1], tmp_path, ["retrain"], log=lambda *_: None)  # one seed: no spread, not 0
    assert (tmp_path / "relearn-mnist-random.csv").read_text().splitlines()[2] == "retrain,100,90.0,,1"
    pytest.importorskip("matplotlib")
    png = tmp_path / "relearn-mnist-random.png"
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ("mnist", "random") in PAPER_LEVELS and PAPER_LEVELS[("fashion_mnist", "class")][0] == 92.5


def test_tuned_relearning_series_get_their_own_panel_with_retrain_and_family_colours(tmp_path):
    series = ([0, 100], [90.0, 80.0], [0.0, 1.0], 5)
    published = {"camu": series, "retrain": series, "ssd": series}
    assert figure_panels(published) == [("", published)]  # no tuned rows: one panel as before
    panels = figure_panels({**published, "ssd (tuned)": series, "camu (tuned)": series})
    assert [title for title, _ in panels] == ["published settings", "tuned (configs/tuned)"]
    assert list(panels[0][1]) == ["camu", "retrain", "ssd"]
    assert list(panels[1][1]) == ["retrain", "ssd (tuned)", "camu (tuned)"]
    colours = method_colours(["camu", "retrain", "ssd", "ssd (tuned)", "camu (tuned)", "scrub (tuned)"])
    assert colours["retrain"] == "black" and colours["ssd"] == colours["ssd (tuned)"] != colours["camu"]
    assert colours["camu"] == colours["camu (tuned)"]
    assert len({colours[m] for m in ("camu", "ssd", "scrub (tuned)")}) == 3
    styles = line_styles(["camu", "camu (tuned)", "camu (full)", "camu (full) (tuned)", "ssd (full)", "ssd (keep)"])
    assert styles["camu"] == styles["camu (tuned)"] == "-" and styles["camu (full)"] == styles["ssd (full)"] == \
        styles["camu (full) (tuned)"] != styles["ssd (keep)"] != "-"
    from matplotlib.colors import to_hex  # every method family its own colour (tab:olive was C8, tab:cyan C9)

    from unlearn import METHODS
    assert len({to_hex(c) for c in method_colours(list(METHODS)).values()}) == len(METHODS)
    cells = [_fake_cell("mnist", "random", m, s, 90.0, 0.5) for m in ("retrain", "ssd") for s in (0, 1)]
    tuned = [{**c, "config": {"tuned": True}} for c in cells if c["method"] == "ssd"]
    write_relearning(cells + tuned, tmp_path, ["retrain", "ssd"], log=lambda *_: None)
    methods = {line.split(",")[0] for line in (tmp_path / "relearn-mnist-random.csv").read_text().splitlines()[1:]}
    assert methods == {"retrain", "ssd", "ssd (tuned)"}


def test_relearn_finetunes_a_copy_and_records_the_gap(mnist_small, small_cfg):
    torch.manual_seed(0)
    model = build_model("cnn", 10)
    before = [p.detach().clone() for p in model.parameters()]
    split = split_for_seed(small_cfg, mnist_small.train.labels, 0)
    cfg = dataclasses.replace(small_cfg, relearn_every=25, bf16="false")
    result = relearn(model, mnist_small, split, cfg, seed=0)
    steps_per_epoch = -(-len(split.remain) // cfg.batch_size)
    assert result["step"] == [*range(0, steps_per_epoch, 25), steps_per_epoch] and result["lr"] == 1e-3
    logits = predict(model, mnist_small, mnist_small.train.images)
    y = mnist_small.train.labels
    untrained_gap = accuracy(logits[split.remain], y[split.remain]) - accuracy(logits[split.forget], y[split.forget])
    assert result["gap"][0] == pytest.approx(untrained_gap, abs=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # a copy was trained
    assert result["gap"][-1] > 50  # a random net learns D_r's nine classes and never sees class 0


def test_tuning_table_checks_each_tuned_row_against_published_and_retrain(tmp_path):
    def cell(method: str, seed: int, tuned: bool, gap: float, test: float) -> dict:
        return {"dataset": "mnist", "scenario": "random", "method": method, "seed": seed,
                "config": {"tuned": tuned, **({"neggrad_lr": 0.0001, "neggrad_epochs": 3} if tuned else {})},
                "row": {"seed": seed, "remain_acc": 99.0, "forget_acc": 98.0, "test_acc": test, "mia": 0.5,
                        "unlearn_time_s": 1.0, "avg_gap": gap,
                        "gap": {"forget_acc": gap, "remain_acc": gap, "test_acc": gap, "mia": 0.0}}}

    cells = [cell("retrain", s, False, 0.0, 98.0 + s) for s in (0, 1)]  # retrain D_t 98.5
    cells += [cell("neggrad", s, False, 10.0 + s, 90.0) for s in (0, 1)]  # published gap 10.5
    cells += [cell("neggrad", s, True, 2.0, 95.0 + s) for s in (0, 1)]  # tuned: gap 2, D_t 95.5 (3 below)
    cells += [cell("ssd", s, False, 1.0, 97.0) for s in (0, 1)]  # published gap 1
    cells += [cell("ssd", 0, True, 3.0, 80.0)]  # tuned: worse gap, D_t 18.5 below retrain
    study = {"scope": {"dataset": "mnist", "scenario": "random", "method": "neggrad"}, "complete": 29, "failed": 1,
             "best": {"value": 1.5, "params": {"neggrad_lr": 0.0001, "neggrad_epochs": 3}}}
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "mnist-random-neggrad.json").write_text(json.dumps(study))
    studies = load_studies(tmp_path / "tuning")
    assert list(studies) == [("mnist", "random", "neggrad")]
    write_tables(cells, tmp_path / "tables", ["retrain", "neggrad", "ssd"], studies)
    lines = (tmp_path / "tables" / "mnist-random-tuning.md").read_text().splitlines()
    assert lines[2] == ("| neggrad | 10.50 | 2.00 | 2/2 | yes | -8.50 ± 0.50 | 95.50 | 3.00 | yes | 30 (1, 0), 1.50 | "
                        "neggrad_lr=0.0001, neggrad_epochs=3 |")  # per seed 2 - 10 and 2 - 11
    assert lines[3] == "| ssd | 1.00 | 3.00 | 2/1 | **no** | - | 80.00 | 18.50 | **no** | - | - |"  # one pair
    study["best"]["params"]["neggrad_epochs"] = 4  # a summary whose best is not what the tuned cells ran
    write_tables(cells, tmp_path / "stale", ["retrain", "neggrad", "ssd"],
                 {("mnist", "random", "neggrad"): study})
    stale = (tmp_path / "stale" / "mnist-random-tuning.md").read_text().splitlines()[2]
    published = [{"seed": s, "avg_gap": 10.0 + s} for s in (0, 1, 2)]
    assert paired_difference(published, [{"seed": s, "avg_gap": 2.0} for s in (0, 1, 2)]) == "-9.00 ± 0.58"
    diverged = [{"seed": s, "avg_gap": None if s == 1 else 2.0} for s in (0, 1, 2)]
    assert paired_difference(published, diverged) == "-"  # not a mean over the other seeds, as summarize
    assert stale.endswith("neggrad_lr=0.0001, neggrad_epochs=4 (not the keys the tuned cells ran) |")
    assert "Published against tuned" in (tmp_path / "tables" / "tables.md").read_text()
    write_tables(cells[:4], tmp_path / "plain", ["retrain", "neggrad"])  # no tuned row, no study: no table
    assert not (tmp_path / "plain" / "mnist-random-tuning.md").exists()


def test_the_recorded_commit_is_dirty_for_code_changes_not_for_written_results(tmp_path: Path) -> None:
    """A sweep writes its cells into results/ and tune.py its files into configs/tuned: those made every later
    cell and tuned file of the same run read ``-dirty``, as if other code had run."""
    from report import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    for name in ("code.py", "results/cells/a.json", "configs/tuned/mnist_class/x.yaml", "configs/preset.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    head = git_commit(tmp_path)
    assert head is not None and re.fullmatch(r"[0-9a-f]{40}", head)
    (tmp_path / "results/cells/a.json").write_text("2\n")
    (tmp_path / "configs/tuned/mnist_class/x.yaml").write_text("2\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "configs/preset.yaml").write_text("2\n")  # a preset is code: what a run reads
    assert git_commit(tmp_path) == head + "-dirty"
