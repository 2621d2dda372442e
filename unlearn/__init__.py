"""Unlearning methods, looked up by name.

Every method has the shape ``unlearn(model, original, task, cfg) -> dict``: it updates
``model`` in place (``original`` stays frozen) and returns training traces only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from config import register_choices
from unlearn import (
    bad_teacher,
    boundary_expand,
    boundary_shrink,
    camu,
    concept_poison,
    finetune,
    neggrad,
    neggrad_plus,
    random_label,
    retrain,
    salun,
    scrub,
    ssd,
    unrolling_sgd,
)
from unlearn.base import UnlearnTask
from unlearn.search_space import Param

Method = Callable[..., dict[str, Any]]

METHODS: dict[str, Method] = {
    "camu": camu.unlearn,
    "retrain": retrain.unlearn,
    "finetune": finetune.unlearn,
    "neggrad": neggrad.unlearn,
    "neggrad_plus": neggrad_plus.unlearn,
    "random_label": random_label.unlearn,
    "boundary_shrink": boundary_shrink.unlearn,
    "boundary_expand": boundary_expand.unlearn,
    "unrolling_sgd": unrolling_sgd.unlearn,
    "bad_teacher": bad_teacher.unlearn,
    "scrub": scrub.unlearn,
    "salun": salun.unlearn,
    "ssd": ssd.unlearn,
    "concept_poison": concept_poison.unlearn,
}


# What tune.py may change per method (retrain has nothing to tune); each module cites its source.
METHODS_MODULES = {
    "camu": camu, "finetune": finetune, "neggrad": neggrad, "neggrad_plus": neggrad_plus,
    "random_label": random_label, "boundary_shrink": boundary_shrink, "boundary_expand": boundary_expand,
    "unrolling_sgd": unrolling_sgd, "bad_teacher": bad_teacher, "scrub": scrub, "salun": salun, "ssd": ssd,
    "concept_poison": concept_poison,
}
SEARCH_SPACES: dict[str, dict[str, Param]] = {name: module.SEARCH_SPACE for name, module in METHODS_MODULES.items()}

# Keys whose published default lies outside the declared space, each module saying why (SSD's alpha).
DEFAULTS_OUTSIDE_SPACE: dict[str, tuple[str, ...]] = {
    name: getattr(METHODS_MODULES[name], "DEFAULTS_OUTSIDE_SPACE", ()) for name in SEARCH_SPACES
}

# Row keys a method adds to results.json beyond the shared metrics: ``f(model, original, task, cfg, state)``,
# where ``state`` is what the method left under its traces' private "_state" key.
ROW_METRICS: dict[str, Callable[..., dict[str, float]]] = {"concept_poison": concept_poison.row_metrics}

# What a method checks before the original model is trained or loaded (``f(cfg)``, raising one-line errors):
# settings only its own work would find wrong, found before hours of training.
PREFLIGHT: dict[str, Callable[..., None]] = {"concept_poison": concept_poison.preflight}

register_choices("method", METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["DEFAULTS_OUTSIDE_SPACE", "METHODS", "PREFLIGHT", "ROW_METRICS", "SEARCH_SPACES", "UnlearnTask",
           "get_method"]
