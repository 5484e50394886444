"""Batch selectors: what the one training loop plugs in to choose each step's sub-batch.

`TakeAll` (reference, uniform, the offline filters) trains on what the stream gives; `ScoreSelect`
runs the learner forward over the super-batch, looks the reference up in the score cache by uid and
picks the sub-batch with `selection.select`. Which one a method gets, and what it scores with, comes
from the method registry (`methods.METHODS`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .. import config as C
from ..core.flops import scoring_stride
from ..core.selection import Embeds, select
from ..model import activation_reuse
from ..model.two_tower import TwoTower, apply_linear
from . import distributed
from .devices import autocast, synchronize
from .loader import Batch
from .score_cache import ScoreCache


@dataclass
class Picked:
    batch: Batch  # the sub-batch to train on
    selection_seconds: float = 0.0
    info: dict = field(default_factory=dict)  # selection diagnostics (chosen_diag, pool_diag, chosen_score)
    tapes: tuple[activation_reuse.Tape, activation_reuse.Tape] | None = (
        None  # the chosen rows' recorded image and text linears
    )


class TakeAll:
    """Train on the whole (super-)batch as drawn: reference training, the uniform baseline and the
    offline filters (which sample uniformly from a filtered pool)."""

    def __init__(self, name: str = "uniform"):
        self.name = name

    def super_batch(self, b: int) -> int:
        return b

    def __call__(self, model, batch, generator, device, dist=distributed.Dist()) -> Picked:
        return Picked(batch)


class ScoreSelect:
    """Score the super-batch with the learner (and the cached reference), then select jointly."""

    def __init__(self, cfg: C.Config, cache: ScoreCache | None, reuse_activations: bool = False):
        self.cfg, self.cache = cfg, cache
        self.method = cfg.select.method_info
        self.name = self.method.name
        self.stride = scoring_stride(cfg)  # Flexi-JEST scores a coarse view of each image (fewer patches)
        if self.method.scores_with_reference and cache is None:
            raise ValueError(f"method {self.name!r} needs a reference score cache (--scores)")
        self.reuse = reuse_activations and self.method.uses_learner  # record the scoring forward for the train step

    def super_batch(self, b: int) -> int:
        return self.cfg.super_batch_size()

    @torch.no_grad()
    def __call__(
        self, model: TwoTower, batch: Batch, generator, device, dist: distributed.Dist = distributed.Dist()
    ) -> Picked:
        sel_cfg, b = self.cfg.select, self.cfg.learner.batch_size
        learner = None
        rec = (activation_reuse.Recorder(), activation_reuse.Recorder()) if self.reuse else ()
        hooks = rec or (apply_linear, apply_linear)  # image and text tower: record their linears, or just run them
        if self.method.uses_learner:
            # Each rank embeds its share of the super-batch; the gathered embeddings are the whole's.
            mine = dist.split(len(batch), "super-batch size")
            model.eval()
            with autocast(device):
                u, v = model(
                    batch.images[mine].to(device, non_blocking=True),
                    batch.tokens[mine].to(device, non_blocking=True),
                    self.stride,
                    *hooks,
                )
            model.train()
            u, v = dist.gather(u.float()), dist.gather(v.float())
            learner = Embeds(u, v, model.log_t.detach().float(), model.bias.detach().float())
        ref = self.cache.lookup(batch.uids, batch.shards, device) if self.method.scores_with_reference else None
        t0 = time.perf_counter()
        sel = select(
            self.name,
            learner,
            ref,
            b,
            sel_cfg.n_chunks,
            generator,
            self.cfg.model.loss,
            sel_cfg.temperature,
            sel_cfg.block_elems,
            sel_cfg.kernel,
        )
        synchronize(device)
        info = {
            "chosen_diag": sel.chosen_diag,
            "pool_diag": sel.pool_diag,
            "chosen_score": sel.chosen_score,
            "chunk_diag": sel.chunk_diag,
        }
        chosen = sel.indices
        if self.method.low_res_scoring:  # Flexi-JEST trains a random half at low resolution (flops.train_groups)
            chosen = chosen[torch.randperm(len(chosen), generator=generator, device=generator.device).to(chosen.device)]
        tapes = tuple(r.tape.take(chosen) for r in rec) if rec else None
        return Picked(batch.take(chosen), time.perf_counter() - t0, info, tapes)


def make_selector(cfg: C.Config, cache: ScoreCache | None, reuse_activations: bool = False):
    if not cfg.select.method_info.online:
        return TakeAll(cfg.select.method)
    return ScoreSelect(cfg, cache, reuse_activations)


def use_reuse(cfg: C.Config, t: C.TrainConfig, device: str, dist: distributed.Dist) -> bool:
    """Whether the learner replays its scoring forward (activation_reuse.py). `auto`: on CUDA, in one process, when
    the super-batch's tape takes at most 40% of the GPU's memory; `on` refuses what cannot work."""
    if t.reuse_activations == "off" or not cfg.select.method_info.uses_learner:
        return False
    if cfg.model.arch != "vit":
        if t.reuse_activations == "on":
            raise ValueError(f"learner.reuse_activations=on needs model.arch=vit (got {cfg.model.arch})")
        return False
    if dist.active:
        if t.reuse_activations == "on":
            raise ValueError(
                "learner.reuse_activations=on needs a single process: under global selection the "
                "chosen rows were embedded on other ranks; use auto or off with torchrun"
            )
        return False
    if t.reuse_activations == "on":
        return True
    if not device.startswith("cuda"):
        return False
    need = activation_reuse.tape_bytes_per_example(cfg.model, scoring_stride(cfg)) * cfg.super_batch_size()
    return need <= 0.4 * torch.cuda.get_device_properties(torch.device(device)).total_memory
