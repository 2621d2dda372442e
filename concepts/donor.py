"""Which class absorbs the forgotten one: the donor whose evidence the forget class's samples get.

The release's rule (``propose`` in ``revision/make_cases.py`` of
ChangWenhan/Concept_Inference_Unlearn_official): walk the forget class's top-k concepts in
order; for each, take the other class with the largest PCBM weight on it; accept that class
if the concept is also that class's own top-1 concept (the two classes are confused
through a concept that defines both). If no concept qualifies, fall back to the ``shared``
rule: the other class with the largest weight on the forget class's top-1 concept.

The release's revision experiments do not use the rule's pick: they run hand-picked cases
(``CASES`` in its ``revision/config.py``), each a forget class's concept to replace, a donor
class and the donor concept its patch is cut at. ``RELEASE_CASES`` holds them;
``concept_poison_donor`` / ``concept_poison_concept`` / ``concept_poison_donor_concept`` run one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Case(NamedTuple):
    """A hand-picked case: the forget class's concept, the donor concept and the donor class."""

    concept: str
    donor_concept: str
    donor: int


# (dataset, forget class) -> the release's case (revision/config.py CASES).
RELEASE_CASES: dict[tuple[str, int], Case] = {
    ("cifar10", 0): Case("propellers", "propellers", 4),  # airplane <- deer
    ("cifar10", 4): Case("antler", "propellers", 0),  # deer <- airplane: its representative case
    ("cifar10", 6): Case("amphibian", "amphibian", 1),  # frog <- automobile
    ("cifar10", 7): Case("horseback", "horseback", 0),  # horse <- airplane
    ("cifar10", 9): Case("gear", "gear", 0),  # truck <- airplane
    ("cifar100", 0): Case("pink", "pink", 70),  # apple <- rose
    ("cifar100", 11): Case("newborn human", "newborn human", 2),  # boy <- baby: its representative case
    ("cifar100", 17): Case("chimney", "chimney", 59),  # castle <- pine_tree
    ("cifar100", 28): Case("lampshade", "lampshade", 40),  # cup <- lamp
    ("cifar100", 30): Case("cetacean", "cetacean", 95),  # dolphin <- whale
}


def shared_donor(weight: torch.Tensor, forget_class: int, concept: int) -> int:
    """The other class that weighs ``concept`` most."""
    column = weight[:, concept].clone()
    column[forget_class] = -torch.inf
    return int(column.argmax())


def choose_donor(weight: torch.Tensor, forget_class: int, ranked: list[int], top_k: int, rule: str
                 ) -> tuple[int, str, int]:
    """``(donor, rule that decided, concept index it went by)`` from the PCBM weights (classes x concepts)."""
    if rule not in ("confusion", "shared"):
        raise ValueError(f"donor rule {rule!r} is not one of confusion, shared")
    if rule == "confusion":
        own_top = weight.argmax(1)
        for concept in ranked[:top_k]:
            candidate = shared_donor(weight, forget_class, concept)
            if int(own_top[candidate]) == concept:
                return candidate, "confusion", concept
    return shared_donor(weight, forget_class, ranked[0]), "shared", ranked[0]
