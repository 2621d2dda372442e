"""Unlearning methods, looked up by name.

Every method has the shape ``unlearn(model, original, task, cfg) -> dict``: it updates
``model`` in place (``original`` stays frozen) and returns training traces only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unlearn import camu
from unlearn.base import UnlearnTask

Method = Callable[..., dict[str, Any]]

METHODS: dict[str, Method] = {
    "camu": camu.unlearn,
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "UnlearnTask", "get_method"]
