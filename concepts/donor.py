"""Which class absorbs the forgotten one: the donor whose evidence the forget class's samples get.

The release's rule (``propose`` in ``revision/make_cases.py`` of
ChangWenhan/Concept_Inference_Unlearn_official): walk the forget class's top-k concepts in
order; for each, take the other class with the largest PCBM weight on it; accept that class
if the concept is also that class's own top-1 concept (the two classes are confused
through a concept that defines both). If no concept qualifies, fall back to the ``shared``
rule: the other class with the largest weight on the forget class's top-1 concept.
"""

from __future__ import annotations

import torch


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
