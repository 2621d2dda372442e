"""How models run: precision, memory layout and optimiser kernel.

None of these change the method; each changes floating-point rounding, so each is a
config key whose measured effect on the metrics is in the README.
- ``channels_last``: NHWC convolutions (oneDNN's fast path on the CPU, tensor cores on GPUs).
- ``fused_adam``: Adam's update as one fused kernel instead of a loop over parameters.
- ``bf16``: bfloat16 autocast of forward passes (matmuls and convolutions; losses stay float32).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Runtime:
    bf16: bool = False
    channels_last: bool = False
    fused_adam: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> Runtime:
        return cls(bf16=cfg.bf16, channels_last=cfg.channels_last, fused_adam=cfg.fused_adam)

    def autocast(self, device: torch.device | str) -> AbstractContextManager:
        device_type = torch.device(device).type
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put ``model`` in this runtime's memory layout (in place) and return it."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def adam(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True if self.fused_adam else None)


PLAIN = Runtime()  # float32, default layout, per-parameter Adam
