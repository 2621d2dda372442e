"""Independent random streams per (seed, purpose).

Each phase draws from its own generator, so adding a draw to one phase never shifts the
numbers another phase sees: the same seed always gives the same split, whatever runs after.

Every generator is a CPU generator, whatever device the data lives on: CUDA generators give
other sequences than CPU ones (and large CUDA draws differ between GPU models), so a draw made
on the GPU would make a GPU run forget with other counterfactuals, labels and crops than the
committed CPU results. Consumers draw on the CPU and move the values (``draw_to``).
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int, purpose: str) -> int:
    """A 32-bit seed for ``purpose`` under ``seed`` (torch's CPU generator keeps 32 bits)."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU torch generator for ``purpose`` under ``seed``, deterministic across runs and devices."""
    g = torch.Generator(device="cpu")
    g.manual_seed(stream_seed(seed, purpose))
    return g


def draw_to(values: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Values drawn on the CPU, on ``device`` (a non-blocking copy from pinned memory on CUDA)."""
    device = torch.device(device)
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)
