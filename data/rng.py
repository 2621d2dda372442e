"""Independent random streams per (seed, purpose).

Each phase draws from its own generator, so adding a draw to one phase never shifts the
numbers another phase sees: the same seed always gives the same split, whatever runs after.
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int, purpose: str) -> int:
    """A 32-bit seed for ``purpose`` under ``seed`` (torch's CPU generator keeps 32 bits)."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def generator(seed: int, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for ``purpose`` under ``seed``, deterministic across runs."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, purpose))
    return g
