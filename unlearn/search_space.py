"""Search spaces of the unlearning methods: which config keys tuning may change, and how.

Each method module declares ``SEARCH_SPACE: dict[str, Param]`` over its own ``<method>_*``
keys beside the published defaults in config.py, so a tuned row is only ever a different
point of a space a reader can see. ``suggest`` turns a space into one Optuna trial's values;
it takes the trial as an argument so importing a method never imports Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    """One tunable key: ``float`` / ``int`` over [low, high] (``log``: log-uniform), or ``categorical``."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Param kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError("a categorical Param needs choices")
        elif not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"Param range [{self.low}, {self.high}] is empty (or not positive with log)")

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return self.low <= value <= self.high


def log_float(low: float, high: float) -> Param:
    return Param("float", low, high, log=True)


def uniform(low: float, high: float) -> Param:
    return Param("float", low, high)


def integer(low: int, high: int, log: bool = False) -> Param:
    return Param("int", low, high, log=log)


def choice(*choices: Any) -> Param:
    return Param("categorical", choices=tuple(choices))


def suggest(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    """One value per key of ``space`` from an Optuna trial (``trial.suggest_*``)."""
    out: dict[str, Any] = {}
    for key, p in space.items():
        if p.kind == "float":
            out[key] = trial.suggest_float(key, float(p.low), float(p.high), log=p.log)
        elif p.kind == "int":
            out[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
        else:
            out[key] = trial.suggest_categorical(key, list(p.choices))
    return out


def distribution(p: Param, value: Any = None) -> Any:
    """The Optuna distribution ``suggest`` draws ``p`` from; widened to hold ``value`` when it lies
    outside (a published setting run as given, e.g. SSD's alpha 10), as a restored trial needs."""
    import optuna

    if p.kind == "categorical":
        choices = list(p.choices) + ([value] if value is not None and value not in p.choices else [])
        return optuna.distributions.CategoricalDistribution(choices)
    low, high = p.low, p.high
    if value is not None:
        low, high = min(low, value), max(high, value)
    if p.kind == "int":
        return optuna.distributions.IntDistribution(int(low), int(high), log=p.log)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=p.log)
