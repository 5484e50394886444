"""Which device a stage runs on, and the precision it computes in there."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> str:
    """`auto` -> cuda where a CUDA device is present, else cpu; `cuda` without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda asked for, but no CUDA device is available")
    return name


def autocast(device: str):
    """bf16 autocast on CUDA; full precision (a disabled autocast) elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def synchronize(device: str) -> None:
    """Wait for queued device work (so a host timer measures it); a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
