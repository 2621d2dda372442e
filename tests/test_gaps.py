"""Gaps to the retrained model against a hand-computed case."""

from __future__ import annotations

import math

import pytest

from eval.gaps import avg_gap, gaps, salun_avg_gap
from report import fill_gaps, summarize


def test_gaps_and_average_by_hand():
    method = {"remain_acc": 99.0, "forget_acc": 2.0, "test_acc": 90.0, "mia": 0.30, "test_forget_acc": 1.0}
    retrain = {"remain_acc": 98.0, "forget_acc": 0.0, "test_acc": 91.5, "mia": 0.25, "test_forget_acc": 0.0}
    gap = gaps(method, retrain)
    assert gap == pytest.approx({"remain_acc": 1.0, "forget_acc": 2.0, "test_acc": 1.5, "mia": 0.05,
                                 "test_forget_acc": 1.0})
    # (2.0 + 1.0 + 1.5 + 5.0) / 4: MIA in percentage points
    assert avg_gap(gap) == pytest.approx(2.375)


def test_salun_avg_gap_by_hand():
    """SalUn's own: gaps of the seed means, TA on D_t,r in class removal, MIA-efficacy x 100."""
    means = {"forget_acc": 2.0, "remain_acc": 99.0, "test_acc": 88.0, "test_remain_acc": 97.0, "mia_efficacy": 0.90}
    retrain = {"forget_acc": 0.0, "remain_acc": 98.0, "test_acc": 89.0, "test_remain_acc": 98.5,
               "mia_efficacy": 0.96}
    assert salun_avg_gap(means, retrain, "class") == pytest.approx((2.0 + 1.0 + 1.5 + 6.0) / 4)
    assert salun_avg_gap(means, retrain, "random") == pytest.approx((2.0 + 1.0 + 1.0 + 6.0) / 4)
    assert math.isnan(salun_avg_gap({**means, "mia_efficacy": None}, retrain, "class"))


def test_the_gap_table_gives_salun_avg_gap_from_the_seed_means_of_filled_rows():
    """Two seeds whose per-seed D_f gaps cancel in the mean: SalUn's gap of the means is 0 there."""
    from report import gap_table, group_cells

    cells = []
    for seed, forget in ((0, 2.0), (1, -2.0)):
        for method, f in (("retrain", 0.0), ("finetune", forget)):
            cell = _cell(method, 0, 0.01, 98.0)
            cell["seed"] = cell["row"]["seed"] = seed
            mine = method == "finetune"
            cell["row"] = {**cell["row"], "forget_acc": 10.0 + f, "test_acc": 86.0 if mine else 90.0,
                           "test_remain_acc": 95.0 if mine else 97.0, "mia_efficacy": 0.6 if mine else 0.5}
            cells.append(cell)
    filled = fill_gaps(cells)
    assert filled[1]["row"]["gap"]["mia_efficacy"] == pytest.approx(0.1)  # the attack suite's gaps too
    by_method = group_cells(filled)[("mnist", "class")]
    line = gap_table(by_method, "class").splitlines()[2].split("|")
    assert line[1].strip() == "finetune" and line[2].strip() == "2.00 ± 0.00"  # per seed: |+-2|
    assert line[7].strip() == "3.00"  # (0 + 0 + |95 - 97| + 10) / 4: D_t,r in class removal
    assert gap_table(by_method, "random").splitlines()[2].split("|")[7].strip() == "3.50"  # D_t: |86 - 90|


def test_gap_of_nan_is_nan():
    gap = gaps({"remain_acc": float("nan")}, {"remain_acc": 50.0})
    assert math.isnan(gap["remain_acc"])


def test_a_stored_null_gaps_as_nan():
    """A NaN metric is stored as null (an empty forget class on a small test slice)."""
    gap = gaps({"test_forget_acc": None, "remain_acc": 99.0}, {"test_forget_acc": None, "remain_acc": 98.0})
    assert math.isnan(gap["test_forget_acc"]) and gap["remain_acc"] == 1.0


def _cell(method: str, forget_class: int, lr: float, remain: float) -> dict:
    config = {"dataset": "mnist", "scenario": "class", "method": method, "forget_class": forget_class,
              "train_limit": 0, "num_threads": 1, "finetune_lr": lr}
    row = {"seed": 0, "remain_acc": remain, "forget_acc": 0.0, "test_acc": 90.0, "mia": 0.25, "test_forget_acc": None}
    return {"dataset": "mnist", "scenario": "class", "method": method, "seed": 0, "row": row, "config": config}


def test_gaps_come_from_the_retrain_cell_of_the_same_split_only():
    retrain = _cell("retrain", 0, 0.01, 98.0)
    ours = _cell("finetune", 0, 0.5, 99.0)  # its own keys and the where-keys may differ
    ours["config"]["num_threads"] = 2
    other_split = _cell("finetune", 3, 0.01, 99.0)
    rows = [c["row"] for c in fill_gaps([retrain, ours, other_split])]
    assert rows[1]["gap_source"] == "retrain cell" and rows[1]["gap"]["remain_acc"] == 1.0
    assert math.isnan(rows[1]["gap"]["test_forget_acc"])
    assert "gap" not in rows[2]  # forget_class 3 against the class-0 retrain cell: no gap


def test_a_key_null_for_one_seed_has_no_mean_over_the_others():
    """A diverged seed's attack scores are NaN (null): a mean over the other seeds would hide it."""
    rows = [{"remain_acc": 99.0, "mia_loss": 0.9}, {"remain_acc": 98.0, "mia_loss": None},
            {"remain_acc": 97.0, "mia_loss": 0.1}]
    mean, std = summarize(rows, ("remain_acc", "mia_loss"))
    assert mean["remain_acc"] == pytest.approx(98.0) and std["remain_acc"] == pytest.approx((2 / 3) ** 0.5)
    assert mean["mia_loss"] is None and std["mia_loss"] is None
    assert summarize(rows[:1] + rows[2:], ("mia_loss",))[0]["mia_loss"] == pytest.approx(0.5)


def test_rows_with_gaps_against_another_retrained_model_are_marked_and_null_gaps_read():
    """A cell that carries its own gaps, from a run whose retrained model evaluated otherwise (other CPU
    kernels), sat unmarked beside the table's retrain row; a stored null gap crashed the gap table."""
    from report import OWN_REFERENCE, gap_table, group_cells

    retrain = _cell("retrain", 0, 0.01, 98.0)
    filled = _cell("finetune", 0, 0.01, 99.0)
    own = _cell("scrub", 0, 0.01, 97.0)
    elsewhere = {**retrain["row"], "remain_acc": 96.0}
    own["row"] = {**own["row"], "retrain": elsewhere, "gap": gaps(own["row"], elsewhere), "avg_gap": 1.0}
    own["row"]["gap"] = {**own["row"]["gap"], "mia": None}  # as a NaN reads back
    by_method = group_cells(fill_gaps([retrain, filled, own]))[("mnist", "class")]
    lines = gap_table(by_method, "class").splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["finetune", f"scrub {OWN_REFERENCE}"]
    assert lines[3].split("|")[5].strip() == "-"  # the null MIA gap: no number, no crash
    assert lines[-1].startswith(f"{OWN_REFERENCE} gaps against the retrained model")
    same = {**own, "row": {**own["row"], "retrain": dict(retrain["row"])}}
    assert OWN_REFERENCE not in gap_table(group_cells(fill_gaps([retrain, same]))[("mnist", "class")], "class")


def test_a_gap_row_that_counts_fewer_seeds_than_its_method_says_so():
    """Seeds without a retrain cell have no gaps: the gap row averaged the others without saying so, beside a
    main-table row over every seed."""
    from report import gap_table, group_cells

    cells = []
    for seed in range(3):
        for method in ("retrain", "finetune") if seed < 2 else ("finetune",):
            cell = _cell(method, 0, 0.01, 98.0)
            cell["seed"] = cell["row"]["seed"] = seed
            cells.append(cell)
    by_method = group_cells(fill_gaps(cells))[("mnist", "class")]
    assert len(by_method["finetune"]) == 3
    names = [line.split("|")[1].strip() for line in gap_table(by_method, "class").splitlines()[2:]
             if line.startswith("|")]
    assert names == ["finetune (2 of 3 seeds)"]


def test_a_tuned_variant_row_pairs_with_its_variant_and_stays_one_csv_field():
    """`camu (tuned, fast)` split into two CSV fields and never met `camu (fast)` in the tuning table."""
    import csv
    import io

    from report import row_name, scenario_table

    published, tuned = _cell("camu", 0, 0.01, 98.0), _cell("camu", 0, 0.01, 97.0)
    published["variant"] = tuned["variant"] = "fast"
    tuned["config"] = {"tuned": True}
    assert row_name(tuned) == "camu (fast) (tuned)" and row_name(published) == "camu (fast)"
    text = scenario_table({"a, b": [published["row"]], row_name(tuned): [tuned["row"]]}, "class", "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[0] for r in rows[1:]] == ["a, b", "camu (fast) (tuned)"] and len({len(r) for r in rows}) == 1
