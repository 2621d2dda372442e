"""Forget / remain / sample index sets, from the seed alone, in milliseconds.

The release finds these with Python list scans (tens of seconds per seed); index
arithmetic on tensors gives splits with the same distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.datasets import DataError


@dataclass
class Split:
    forget: torch.Tensor  # D_f: training indices to forget (repeated rows when forget_repeat > 1)
    remain: torch.Tensor  # D_r: every other training index, sorted
    sample: torch.Tensor  # D_s: |D_f| indices drawn from D_r without replacement

    def to(self, device: torch.device | str) -> Split:
        return Split(self.forget.to(device), self.remain.to(device), self.sample.to(device))


def make_split(labels: torch.Tensor, scenario: str, forget_class: int, forget_fraction: float,
               forget_repeat: int, gen: torch.Generator) -> Split:
    """Draw D_f (one class, or a uniform fraction of the training set), D_r and D_s.

    ``gen`` is a CPU generator; indices come back on the CPU, int64.
    """
    labels = labels.cpu()
    n = labels.shape[0]
    if scenario == "class":
        is_forget = labels == forget_class
        forget = torch.nonzero(is_forget).flatten()
    elif scenario == "random":
        k = int(round(forget_fraction * n))
        forget = torch.randperm(n, generator=gen)[:k].sort().values
        is_forget = torch.zeros(n, dtype=torch.bool)
        is_forget[forget] = True
    else:
        raise ValueError(f"scenario {scenario!r} is not one of class, random")
    remain = torch.nonzero(~is_forget).flatten()
    if len(forget) == 0:
        raise DataError(f"the forget set is empty (scenario {scenario}, class {forget_class}, "
                        f"{n} training samples): raise forget_fraction or train_limit")
    forget = forget.repeat(forget_repeat)
    if len(forget) > len(remain):
        raise DataError(f"D_s needs {len(forget)} samples (|D_f| x forget_repeat) but D_r has only {len(remain)}: "
                        "lower forget_repeat, or remove fewer samples")
    sample = remain[torch.randperm(len(remain), generator=gen)[:len(forget)]]
    return Split(forget=forget, remain=remain, sample=sample)
