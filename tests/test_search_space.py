"""Every declared search space names real config keys, with ranges that hold the published default."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config import Config, _field_types
from unlearn import DEFAULTS_OUTSIDE_SPACE, METHODS, SEARCH_SPACES
from unlearn.search_space import Param, suggest

ROOT = Path(__file__).resolve().parents[1]
KIND_OF = {"float": float, "int": int}


def test_every_method_but_retrain_declares_a_space() -> None:
    assert set(SEARCH_SPACES) == set(METHODS) - {"retrain"}
    assert all(SEARCH_SPACES.values())


@pytest.mark.parametrize("method", sorted(SEARCH_SPACES))
def test_space_keys_types_ranges_and_defaults(method: str) -> None:
    types = _field_types()
    defaults = Config()
    camu_keys = {"rep_lr", "out_lr", "unlearn_epochs"}
    for key, p in SEARCH_SPACES[method].items():
        assert key in types, f"{method}: {key} is not a config key"
        assert key.startswith(f"{method}_") or (method == "camu" and key in camu_keys)
        default = getattr(defaults, key)
        if p.kind == "categorical":
            assert all(isinstance(c, types[key]) for c in p.choices)
        else:
            assert types[key] is KIND_OF[p.kind], f"{key}: field {types[key]} vs Param {p.kind}"
            assert p.low < p.high
            if p.log:
                assert p.low > 0
        if key in DEFAULTS_OUTSIDE_SPACE[method]:  # declared, with the module's reason: it must really be outside
            assert not p.contains(default), f"{key}: listed as outside the space but {default} is inside"
        else:
            assert p.contains(default), f"{key}: default {default} outside [{p.low}, {p.high}]"


def test_preset_values_outside_a_space_are_numbers_tune_py_runs_as_given() -> None:
    """tune.py queues the configured setting as a trial: Optuna runs a number outside its range as
    given but refuses a choice outside its list (tune.py then refuses the preset)."""
    import yaml

    outside = []
    for preset in sorted((ROOT / "configs").glob("*.yaml")):
        values = yaml.safe_load(preset.read_text())
        for space in SEARCH_SPACES.values():
            for key, p in space.items():
                if key in values and not p.contains(values[key]):
                    assert p.kind != "categorical", f"{preset.name}: {key} {values[key]!r} not among {p.choices}"
                    outside.append((preset.stem, key, values[key]))
    assert outside == [(f"{d}_random", "unlearn_epochs", 10) for d in ("cifar100", "cifar10", "fashion_mnist", "mnist")]


def test_camu_space_covers_its_loss_weights() -> None:
    weights = {f.name for f in dataclasses.fields(Config) if f.name.startswith("camu_") and f.name.endswith("_weight")}
    assert len(weights) == 4 and weights | {"rep_lr", "out_lr", "unlearn_epochs"} == set(SEARCH_SPACES["camu"])


def test_bad_params_are_refused() -> None:
    with pytest.raises(ValueError):
        Param("float", 1.0, 1.0)
    with pytest.raises(ValueError):
        Param("float", 0.0, 1.0, log=True)
    with pytest.raises(ValueError):
        Param("categorical")
    with pytest.raises(ValueError):
        Param("bool", 0, 1)


class _Trial:
    """The three suggest_* calls of an Optuna trial, answering the low end and recording the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def suggest_float(self, name, low, high, log=False):
        self.calls.append(("float", name, low, high, log))
        return low

    def suggest_int(self, name, low, high, log=False):
        self.calls.append(("int", name, low, high, log))
        return low

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, tuple(choices)))
        return choices[0]


def test_suggest_maps_each_kind_to_its_call() -> None:
    space = {"a": Param("float", 1e-4, 1e-1, log=True), "b": Param("int", 1, 5),
             "c": Param("categorical", choices=("sgd", "adam"))}
    trial = _Trial()
    assert suggest(trial, space) == {"a": 1e-4, "b": 1, "c": "sgd"}
    assert trial.calls == [("float", "a", 1e-4, 1e-1, True), ("int", "b", 1, 5, False),
                           ("categorical", "c", ("sgd", "adam"))]
