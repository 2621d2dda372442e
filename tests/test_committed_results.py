"""The committed results agree with each other: tuned files, their studies, their cells and the tables.

A tuned file changed without its cells computed again, a study summary replaced without its file,
or a cell added without the tables rebuilt would each leave a table that no longer says what
produced it; these checks read the committed files only (no training).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import reproduce
from config import parse_args
from unlearn import SEARCH_SPACES

ROOT = Path(__file__).resolve().parents[1]
TUNED = sorted((ROOT / "configs" / "tuned").glob("*/*.yaml"))
REPORTED_SEEDS = range(5)
# the documented table command (docs/reproduce.md, "Committed results")
TABLE_METHODS = ("camu,retrain,bad_teacher,boundary_shrink,unrolling_sgd,neggrad,concept_poison,ssd,finetune,"
                 "neggrad_plus,random_label,boundary_expand,scrub,salun")


def scope(path: Path) -> tuple[str, str, str]:
    """configs/tuned/DATASET_SCENARIO/METHOD.yaml -> (dataset, scenario, method)."""
    dataset, scenario = path.parent.name.rsplit("_", 1)
    return dataset, scenario, path.stem


def test_every_scenario_has_its_tuned_files():
    # the 11 baselines and CaMU (the concept method has its own study design: docs/concepts.md)
    methods = sorted(set(SEARCH_SPACES) - {"concept_poison"})
    expected = {(d, s, m) for d in ("mnist", "fashion_mnist") for s in ("class", "random") for m in methods}
    assert {scope(p) for p in TUNED} == expected and len(methods) == 12


@pytest.mark.parametrize("path", TUNED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_tuned_file_is_its_study_best_and_its_cells_came_from_it(path):
    dataset, scenario, method = scope(path)
    keys = yaml.safe_load(path.read_text())
    study = json.loads((ROOT / "results" / "tuning" / f"{dataset}-{scenario}-{method}.json").read_text())
    assert keys == study["best"]["params"]
    assert set(keys) <= set(SEARCH_SPACES[method])
    assert not set(study["tune_seeds"]) & set(REPORTED_SEEDS)
    tuned = parse_args([str(ROOT / "configs" / f"{path.parent.name}.yaml"), f"--method={method}", "--tuned=true"])
    assert tuned.tuned_file == f"configs/tuned/{path.parent.name}/{path.name}"  # the file --tuned=true reads
    for seed in REPORTED_SEEDS:
        for name in (f"{method}-tuned-seed{seed}.json", f"{method}-seed{seed}.json"):
            cell = json.loads((ROOT / "results" / "cells" / f"{dataset}-{scenario}" / name).read_text())
            assert (cell["seed"], cell.get("tuned", False)) == (seed, "tuned" in name)
            if "tuned" in name:
                assert (cell["config"]["tuned_file"], cell["config"]["tuned_sha256"]) == (tuned.tuned_file,
                                                                                          tuned.tuned_sha256)
                assert all(cell["config"][k] == getattr(tuned, k) for k in keys)


def test_committed_tables_are_what_the_committed_cells_give(tmp_path, capsys):
    for part in ("cells", "tuning"):
        shutil.copytree(ROOT / "results" / part, tmp_path / part)
    status = reproduce.main(["--table-only", f"--out_dir={tmp_path}", "--datasets=mnist,fashion_mnist",
                             f"--methods={TABLE_METHODS}"])
    assert status == 0, capsys.readouterr().err[-2000:]

    def texts(folder: Path) -> dict[str, str]:  # the figures' PNG bytes depend on matplotlib's version
        return {p.name: p.read_text() for p in folder.iterdir() if p.suffix in (".md", ".csv", ".tex")}

    written, committed = texts(tmp_path / "tables"), texts(ROOT / "results" / "tables")
    assert sorted(written) == sorted(committed)
    stale = [name for name in written if written[name] != committed[name]]
    assert not stale, f"tables not rebuilt from the cells: {stale}"
