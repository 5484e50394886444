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

    @classmethod
    def load(cls, uri: str, image_size: int, max_bad_fraction: float = 0.01) -> EvalSet:
        stats = ReadStats(max_bad_fraction=max_bad_fraction)
        samples = list(iter_split(uri, stats, image_size))
        if not samples:
            raise ValueError(f"evaluation split {uri} has no usable samples")
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
        )


def _embed(model: TwoTower, images, tokens, batch_size, device):
    img, txt = [], []
    for i in range(0, len(images), batch_size):
        with autocast(device):
            img.append(model.encode_image(images[i : i + batch_size].to(device)))
            txt.append(model.encode_text(tokens[i : i + batch_size].to(device)))
    return torch.cat(img), torch.cat(txt)


def recall_at(sim: torch.Tensor, ks=(1, 5)) -> dict:
    """Row i's correct column is i; recall@k = fraction of rows whose correct column is in the top k."""
    correct = sim.diagonal().unsqueeze(1)
    rank = (sim > correct).sum(1)  # strict: ties count in the query's favour
    return {k: float((rank < k).float().mean()) for k in ks}


@torch.no_grad()
def evaluate(model: TwoTower, tokenizer: Tokenizer, ev: EvalSet, batch_size: int = 256, device: str = "cpu") -> dict:
    was_training = model.training
    model.eval()
    img, txt = _embed(model, ev.images, tokenizer.encode(ev.captions), batch_size, device)
    sim = img @ txt.T
    i2t, t2i = recall_at(sim), recall_at(sim.T)
    out = {"n": len(ev.uid), "i2t_r1": i2t[1], "i2t_r5": i2t[5], "t2i_r1": t2i[1], "t2i_r5": t2i[5]}
    out["retrieval_r1"] = (out["i2t_r1"] + out["t2i_r1"]) / 2
    if ev.classes:
        prompts = [t.format(c) for c in ev.classes for t in ev.templates]
        with autocast(device):
            cls_emb = model.encode_text(tokenizer.encode(prompts).to(device))
        cls_emb = torch.nn.functional.normalize(cls_emb.view(len(ev.classes), len(ev.templates), -1).mean(1), dim=-1)
        known = ev.labels >= 0
        pred = (img @ cls_emb.T).argmax(1).cpu()
        out["zeroshot_top1"] = float((pred[known] == ev.labels[known]).float().mean()) if known.any() else float("nan")
        out["zeroshot_chance"] = 1.0 / len(ev.classes)
    if was_training:
        model.train()
    return out
