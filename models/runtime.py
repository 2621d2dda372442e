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

import copy
import os
import platform
import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
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
            self._compile(model)
        return model

    def _compile(self, model: nn.Module) -> None:
        """``nn.Module.compile`` in this mode; under ``reduce-overhead``, live outputs survive the next call.

        CUDA graphs write every call's outputs into the same memory, and by default reading an
        output after the next call raises ("accessing tensor output of CUDAGraphs that has been
        overwritten"). Evaluation concatenates logits batch by batch, CaMU keeps the original's
        embeddings and SCRUB its teacher's logits across calls: torch's ``user_visible`` cloning
        copies such outputs out of the graph's memory before the next call overwrites them.
        """
        if self.compile == "reduce-overhead":
            import torch._inductor.config as inductor_config

            inductor_config.triton.cudagraph_trees_generation_cloning = "user_visible"
        model.compile(mode=self.compile)

    def copy(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` in this runtime's compile mode.

        ``copy.deepcopy`` drops ``nn.Module.compile``, so every copy that is trained or
        evaluated (the model being unlearned, bench's copy, the relearning copy) goes
        through here to run compiled when ``compile`` says so.
        """
        clone = copy.deepcopy(model)
        if self.compile != "off":
            self._compile(clone)
        return clone

    def adam(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True if self.fused_adam else None)

    def needs_warm_up(self, device: torch.device | str) -> bool:
        """Whether the first training step in this process costs far more than the next ones: on CUDA the first
        kernels create the cuBLAS / cuDNN handles and load their libraries and kernels (seconds on an H100),
        and a compiled copy's first call compiles. On the CPU in eager mode it is tens of milliseconds."""
        return torch.device(device).type == "cuda" or self.compile != "off"

    def warm_up(self, model: nn.Module, x: torch.Tensor) -> None:
        """One training step (forward, backward, this runtime's Adam at lr 0) of a throwaway copy of ``model`` on
        ``x``, so that those one-off costs fall outside a timed unlearning. ``model`` is not touched and no
        random stream moves (the CPU's and ``x``'s device's are forked), so the numbers that follow are the
        same with or without it."""
        device = x.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            clone = self.copy(model).train()
            opt = self.adam(clone.parameters(), lr=0.0, weight_decay=0.0)
            with self.autocast(device):
                out = clone(x)
            parts = out if isinstance(out, (tuple, list)) else (out,)
            sum(t.float().mean() for t in parts).backward()
            opt.step()


@contextmanager
def eager(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` run without its ``nn.Module.compile`` for the block: forward hooks on its submodules (Grad-CAM's
    layer, the classifier's inputs) fire only in eager mode, where a compiled graph skips them."""
    compiled = getattr(model, "_compiled_call_impl", None)
    model._compiled_call_impl = None
    try:
        yield model
    finally:
        model._compiled_call_impl = compiled


@cache
def device_name(device: torch.device | str) -> str:
    """``cpu`` or the GPU's model name (``cuda: NVIDIA H100 80GB HBM3``): what a result was computed on."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def _determinism_flags() -> tuple[bool, bool, bool, bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32)


def _set_determinism_flags(flags: tuple[bool, bool, bool, bool, bool]) -> None:
    torch.use_deterministic_algorithms(flags[0])
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = flags[1:]


TORCH_DETERMINISM = _determinism_flags()  # torch's own settings, as the process started with them


_late_cublas_said = False


def _say_late_cublas() -> None:
    """Once per process: CUDA ran before deterministic mode was asked for (a notebook, a sweep's worker that ran
    another config first), so cuBLAS may hold workspaces sized before the setting below; torch's own check
    reads the variable when called and does not see that."""
    global _late_cublas_said
    _late_cublas_said = True
    print("note: deterministic: true after CUDA had started in this process; cuBLAS may keep its earlier "
          "workspaces: for bitwise repeats start the process with CUBLAS_WORKSPACE_CONFIG=:4096:8",
          file=sys.stderr)


def configure_determinism(deterministic: bool) -> None:
    """``deterministic: true``: deterministic kernels only, no cuDNN autotuning, no TF32.

    Must run before the first CUDA call of the process: cuBLAS reads its workspace setting
    when its handle is created. ``false`` restores torch's defaults (cuDNN may autotune, TF32
    as torch sets it), which differ from CPU results by more than rounding on a GPU; restoring
    them matters in a process that runs several configs (a sweep's worker, the notebook).
    """
    if not deterministic:
        _set_determinism_flags(TORCH_DETERMINISM)
        return
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_initialized() and not _late_cublas_said:
        _say_late_cublas()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _set_determinism_flags((True, False, True, False, False))


def backend_info(device: torch.device | str) -> dict[str, Any]:
    """What ran: the device and CPU, CUDA/cuDNN versions, TF32 and deterministic mode (results.json meta)."""
    device = torch.device(device)
    return {"device_name": device_name(device), **cpu_info(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled())}


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags (Linux: /proc/cpuinfo; elsewhere the platform's name, no flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor(), frozenset()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                platform.processor())
    return name, frozenset(text.split())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (AVX-512 BF16 or AMX)."""
    return cpu_info()["cpu_bf16"] != "none"


def onednn_isa_cap() -> str:
    """oneDNN's instruction-set cap from the environment (``ONEDNN_MAX_CPU_ISA``, or its older name
    ``DNNL_MAX_CPU_ISA``), upper-cased; empty when unset. oneDNN reads it at its first kernel."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def _capped_bf16_path(path: str, cap: str) -> str:
    """The bf16 path left under oneDNN's cap: AMX caps (and none) leave it, the AVX-512 BF16 / FP16
    / AVX10 caps take AMX away, lower ones (AVX512_CORE, AVX2, ...) every native bf16 kernel."""
    if not cap or cap in ("ALL", "DEFAULT") or "AMX" in cap:
        return path
    if "BF16" in cap or "FP16" in cap or cap.startswith("AVX10"):
        return "avx512_bf16" if path != "none" else "none"
    return "none"


def cpu_info() -> dict[str, str]:
    """The CPU and the kernels torch picks on it, recorded beside every result.

    The same config and seed give the same numbers on the same kind of CPU only: torch and
    oneDNN pick kernels per instruction set (bfloat16 dot products run on AMX tiles on recent
    Xeons, as AVX-512 BF16 instructions on AMD EPYC), other kernels need not round alike, and a
    20-epoch training grows a rounding difference into a seed-sized one (docs/reproduce.md).
    ``cpu_bf16`` is the path bf16 autocast takes: ``amx``, ``avx512_bf16`` or ``none``, after
    ``onednn_max_cpu_isa`` (the environment's cap; ``AVX512_CORE_BF16`` on an AMX Xeon runs the
    AVX-512 BF16 kernels and reproduces the committed cells bit for bit, docs/reproduce.md).
    """
    name, flags = _cpuinfo()
    bf16 = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "none"
    cap = onednn_isa_cap()
    return {"cpu": name or "unknown", "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": _capped_bf16_path(bf16, cap), "onednn_max_cpu_isa": cap}


def resolve_bf16(setting: str | bool, device: torch.device | str) -> bool:
    """The config's ``bf16`` (auto | true | false) for ``device``."""
    if isinstance(setting, bool):
        return setting
    if setting == "auto":
        return torch.device(device).type == "cpu" and cpu_has_native_bf16()
    return setting == "true"


PLAIN = Runtime()  # float32, default layout, per-parameter Adam
