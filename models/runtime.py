"""How models run: precision, memory layout and optimiser kernel.

None of these change the method; each changes floating-point rounding, so each is a
config key whose measured effect on the metrics is in docs/speed.md and docs/fidelity.md.
- ``channels_last``: NHWC convolutions (oneDNN's fast path on the CPU, tensor cores on GPUs).
- ``fused_adam``: Adam's update as one fused kernel instead of a loop over parameters.
- ``compile``: ``torch.compile`` of every model (``reduce-overhead`` records CUDA graphs on a
  GPU, where the small CNN at batch 32 is bound by kernel launches); off by default.
- ``bf16``: bfloat16 autocast of forward passes (matmuls and convolutions; losses stay float32).
  ``auto`` turns it on for a CPU with native bfloat16 dot products (AVX-512 BF16 or AMX),
  where it was measured to keep the MNIST metrics within the fidelity bounds, and leaves
  it off on CUDA and on CPUs that would only emulate it.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Runtime:
    bf16: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    compile: str = "off"

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device | str) -> Runtime:
        return cls(bf16=resolve_bf16(cfg.bf16, device), channels_last=cfg.channels_last, fused_adam=cfg.fused_adam,
                   compile=getattr(cfg, "compile", "off"))

    def autocast(self, device: torch.device | str) -> AbstractContextManager:
        device_type = torch.device(device).type
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put ``model`` in this runtime's memory layout and compile mode (in place) and return it.

        ``nn.Module.compile`` keeps the module's class and state_dict keys, so checkpoints and
        deep copies (each unlearning starts from one) work as without it.
        """
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile != "off":
            model.compile(mode=self.compile)
        return model

    def adam(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True if self.fused_adam else None)


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (Linux: /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(setting: str | bool, device: torch.device | str) -> bool:
    """The config's ``bf16`` (auto | true | false) for ``device``."""
    if isinstance(setting, bool):
        return setting
    if setting == "auto":
        return torch.device(device).type == "cpu" and cpu_has_native_bf16()
    return setting == "true"


PLAIN = Runtime()  # float32, default layout, per-parameter Adam
