"""Zero-shot classification and image<->text retrieval on a held-out split."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..data.classes import label_of, read_classes
from ..data.shards import ReadStats, iter_split
from ..model.tokenizer import Tokenizer
from ..model.two_tower import TwoTower
from .devices import autocast

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """A small held-out split loaded once (images stay uint8) so curves can be evaluated cheaply."""

    uid: list
    images: torch.Tensor  # N x H x W x 3 uint8
    captions: list
    labels: torch.Tensor  # N, -1 where unknown
    classes: list | None
    templates: list | None
    groups: list | None = None  # each sample's metadata `group` (e.g. head / tail), where the split records one
    skipped: dict | None = None  # bad samples dropped on loading, by reason (within max_bad_fraction)

    @classmethod
    def load(cls, uri: str, image_size: int, max_bad_fraction: float = 0.01) -> EvalSet:
        stats = ReadStats(max_bad_fraction=max_bad_fraction)
        samples = list(iter_split(uri, stats, image_size))
        stats.judge(f"evaluation split {uri}")  # the rule every stage applies (shards.judge_bad)
        if stats.bad:
            log.warning("evaluation split %s: %d bad samples dropped (%s); evaluating on %d",
                        uri, stats.bad, stats.skipped, len(samples))  # fmt: skip
        classes = read_classes(uri)
        if classes is None:
            log.warning(
                "evaluation split %s has no classes.json: zero-shot classification is skipped, retrieval only", uri
            )
        labels = torch.tensor([label_of(s, classes) for s in samples])
        return cls(
            [s.uid for s in samples],
            torch.from_numpy(np.stack([s.image for s in samples])),
            [s.caption for s in samples],
            labels,
            classes.names if classes else None,
            classes.templates if classes else None,
            [str(s.meta["group"]) for s in samples] if all("group" in s.meta for s in samples) else None,
            dict(stats.skipped),
        )


def _embed(model: TwoTower, images, tokens, batch_size, device):
    img, txt = [], []
    for i in range(0, len(images), batch_size):
        with autocast(device):
            img.append(model.encode_image(images[i : i + batch_size].to(device)))
            txt.append(model.encode_text(tokens[i : i + batch_size].to(device)))
    return torch.cat(img), torch.cat(txt)


def ranks(sim: torch.Tensor) -> torch.Tensor:
    """Row i's correct column is i: its rank among the row's columns (0 = first; ties count in its favour)."""
    return (sim > sim.diagonal().unsqueeze(1)).sum(1)


def pack_hits(hit: torch.Tensor) -> str:
    """Which queries were answered correctly, as base64 of the packed bits (what intervals resample)."""
    import base64

    return base64.b64encode(np.packbits(hit.cpu().numpy().astype(bool)).tobytes()).decode()


def unpack_hits(packed: str, n: int) -> np.ndarray:
    import base64

    return np.unpackbits(np.frombuffer(base64.b64decode(packed), np.uint8))[:n].astype(bool)


@torch.no_grad()
def evaluate(
    model: TwoTower, tokenizer: Tokenizer, ev: EvalSet, batch_size: int = 256, device: str = "cpu", hits: bool = False
) -> dict:
    """Retrieval recall@1/@5 both ways (and their mean, `retrieval_r1`), zero-shot top-1 where the split has
    classes, R@1 per metadata group where it has groups. `hits`: also each query's R@1 outcome, packed
    (`query_hits`), so intervals can resample queries."""
    was_training = model.training
    model.eval()
    img, txt = _embed(model, ev.images, tokenizer.encode(ev.captions), batch_size, device)
    sim = img @ txt.T
    r_i2t, r_t2i = ranks(sim), ranks(sim.T)
    out = {"n": len(ev.uid)}
    for name, r in (("i2t", r_i2t), ("t2i", r_t2i)):
        out[f"{name}_r1"], out[f"{name}_r5"] = float((r < 1).float().mean()), float((r < 5).float().mean())
    out["retrieval_r1"] = (out["i2t_r1"] + out["t2i_r1"]) / 2
    out["retrieval_chance"] = 1.0 / len(ev.uid)
    for g in sorted(set(ev.groups or ())):  # a query of group g retrieves among all N
        rows = torch.tensor([x == g for x in ev.groups], device=r_i2t.device)
        out[f"retrieval_r1_{g}"] = float(((r_i2t[rows] < 1).float().mean() + (r_t2i[rows] < 1).float().mean()) / 2)
    if hits:
        out["query_hits"] = {"i2t": pack_hits(r_i2t < 1), "t2i": pack_hits(r_t2i < 1)}
    if ev.classes:
        prompts = [t.format(c) for c in ev.classes for t in ev.templates]
        with autocast(device):
            cls_emb = model.encode_text(tokenizer.encode(prompts).to(device))
        cls_emb = torch.nn.functional.normalize(cls_emb.view(len(ev.classes), len(ev.templates), -1).mean(1), dim=-1)
        known = ev.labels >= 0
        pred = (img @ cls_emb.T).argmax(1).cpu()
        # no labeled sample: no zero-shot score (None, null in JSON), not a number
        out["zeroshot_top1"] = float((pred[known] == ev.labels[known]).float().mean()) if known.any() else None
        out["zeroshot_chance"] = 1.0 / len(ev.classes)
    if was_training:
        model.train()
    return out
