"""How much the int8 score cache and bf16 selection change JEST's choices, on trained embeddings.

The bench's JEST learner (seed 0) embeds real super-batches of the pool (N = 5b); the reference's
embeddings come from its float16 score cache, the precision every other run uses (the baseline here).
Variants, each selecting with the very same random draws as the baseline:

- `int8 cache`: the reference's embeddings quantised as `score.dtype=int8` stores them
  (score_cache.quantize: per-row symmetric int8);
- `bf16 selection`: both models' embeddings rounded to bfloat16 before the block products, the inputs
  the fused kernel feeds the tensor cores on CUDA (products and sums stay float32 here, as in the
  kernel's accumulators). This emulates the kernel's rounding; the kernel itself has no CPU test, since
  Triton's interpreter cannot run a bf16 `tl.dot`.

Per sub-batch size b: the share of the chosen examples that differ from the baseline's (mean and worst
over draws), and the largest error of a candidate's gain along the baseline's chunks (nats), both
models' losses being in nats. The embeddings are the tiny model's (d = 64); at d = 768 the rounding
errors of a dot product grow with sqrt(d).
"""

from __future__ import annotations

import statistics

import torch

from .. import config as C
from .. import storage

SIZES = (32, 256, 1024)  # sub-batch b; super-batch N = 5b (filter ratio 0.8)
DRAWS = 8


def study(cfg: C.Config, st, sizes=SIZES, draws: int = DRAWS) -> dict:
    from ..core.selection import Embeds, SigmoidScorer, sample_chunks, score_terms
    from ..data.shards import ReadStats, stream
    from ..model.tokenizer import Tokenizer
    from ..model.two_tower import load_model
    from ..training.loader import make_batches
    from ..training.score_cache import ScoreCache, quantize
    from .curation import JEST

    model_dir = storage.join(st.runs, f"{JEST}-s0")
    model = load_model(storage.join(model_dir, "model.pt")).eval()
    tok = Tokenizer.load(storage.join(model_dir, "tokenizer.json"))
    cache = ScoreCache(st.scores)
    chunks = cfg.select.n_chunks

    def int8(x: torch.Tensor) -> torch.Tensor:
        q, scale = quantize(x)
        return torch.from_numpy(q).float() * torch.from_numpy(scale)[:, None]

    def bf16(e: Embeds) -> Embeds:
        return Embeds(e.img.bfloat16().float(), e.txt.bfloat16().float(), e.log_t, e.bias)

    out = {"sizes": {}, "draws": draws, "n_chunks": chunks, "embed_dim": model.config.embed_dim}
    for b in sizes:
        n = 5 * b
        samples = stream(
            storage.join(st.data, "pool"), 31 + b, 2000, ReadStats(max_bad_fraction=1.0), cfg.model.image_size
        )
        rows = {"int8 cache": [], "bf16 selection": []}
        for d, batch in zip(range(draws), make_batches(samples, n, tok)):
            with torch.no_grad():
                u, v = model(batch.images, batch.tokens)
            learner = Embeds(u.float(), v.float(), model.log_t.detach().float(), model.bias.detach().float())
            ref = cache.lookup(batch.uids, batch.shards)
            variants = {
                "int8 cache": (learner, Embeds(int8(ref.img), int8(ref.txt), ref.log_t, ref.bias)),
                "bf16 selection": (bf16(learner), bf16(ref)),
            }
            base_terms = score_terms("learnability", learner, ref)
            base = sample_chunks(SigmoidScorer(base_terms), b, chunks, torch.Generator().manual_seed(d))
            for name, (lv, rv) in variants.items():
                terms = score_terms("learnability", lv, rv)
                chosen = sample_chunks(SigmoidScorer(terms), b, chunks, torch.Generator().manual_seed(d))
                changed = 1 - len(set(base.tolist()) & set(chosen.tolist())) / b
                rows[name].append((changed, _gain_error(base_terms, terms, base, chunks)))
        out["sizes"][str(b)] = {
            name: {
                "changed_mean": statistics.fmean(c for c, _ in r),
                "changed_max": max(c for c, _ in r),
                "gain_error_max": max(g for _, g in r),
            }
            for name, r in rows.items()
        }
    return out


def _gain_error(base_terms, terms, chosen: torch.Tensor, chunks: int) -> float:
    """Largest |gain difference| over candidates, before each chunk of the baseline's draw order."""
    from ..core.selection import SigmoidScorer

    a, v = SigmoidScorer(base_terms), SigmoidScorer(terms)
    c = len(chosen) // chunks
    worst = 0.0
    for k in range(chunks):
        worst = max(worst, float((a.logits() - v.logits()).abs().max()))
        idx = chosen[k * c : (k + 1) * c]
        a.add(idx)
        v.add(idx)
    return worst
