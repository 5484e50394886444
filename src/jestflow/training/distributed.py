"""Data-parallel training over `torch.distributed` (torchrun / a Kubeflow PyTorchJob).

How JEST runs on W ranks (docs/distributed.md says why):

* every rank reads the *same* stream (same seed), so every rank holds the whole super-batch;
* each rank runs the learner forward over its 1/W slice of the super-batch; the image and text
  embeddings are all-gathered, so every rank sees the learner's embeddings of the whole super-batch;
* every rank runs the same joint selection with the same generator state: identical choices without
  a broadcast (the selection is a deterministic function of identical inputs);
* each rank trains on its 1/W slice of the chosen sub-batch; embeddings are all-gathered *with
  gradient* so the loss is the full-batch pairwise loss (SigLIP's pairs cross ranks), and DDP
  averages the parameter gradients. That equals single-process training on the same global batch.

`Dist()` with no launcher environment is the single-process case and every method is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def split(self, n: int, what: str) -> slice:
        """This rank's contiguous share of `n` rows."""
        if n % self.world:
            raise ValueError(f"{what} = {n} is not divisible by the number of ranks ({self.world})")
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's `x` along dim 0, in rank order (no gradient)."""
        if not self.active:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        torch.distributed.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def gather_with_grad(self, x: torch.Tensor) -> torch.Tensor:
        """As `gather`, but the gradient flows back to every rank's own slice (summed over ranks)."""
        if not self.active:
            return x
        return _GatherWithGrad.apply(x, self)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (e.g. one rank got SIGTERM)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self._device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def _device(self) -> str:
        return f"cuda:{self.local_rank}" if torch.distributed.get_backend() == "nccl" else "cpu"


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the sum, over ranks, of the gradient of its slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dist: Dist) -> torch.Tensor:
        ctx.rows, ctx.dist = x.shape[0], dist
        return dist.gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)  # gloo has no reduce_scatter; embeddings are small
        r = ctx.dist.rank * ctx.rows
        return grad[r : r + ctx.rows], None


def setup(device: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU.

    Returns the rank facts and the device this rank trains on (`device` as resolved: cpu | cuda)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend)
    if device == "cuda":
        device = f"cuda:{local}"
    return Dist(rank, world, local), device


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
