"""How much the int8 score cache and bf16 selection change JEST's choices, on trained embeddings.

Baseline: learnability from the learner's float32 embeddings and the reference's float16 ones (what
the score cache stores by default), scored in float32 (`SigmoidScorer`). Each variant selects with the
very same random draws as the baseline:

- `int8 cache`: the reference's embeddings quantised as `score.dtype=int8` stores them
  (score_cache.quantize: per-row symmetric int8);
- `bf16 selection`: both models' embeddings rounded to bfloat16 before the block products, the inputs
  the fused kernel feeds the tensor cores (products and sums stay float32, as in the kernel's
  accumulators). This emulates the kernel's rounding and runs anywhere;
- `fused kernel` and `fused kernel + int8 cache` (where the kernel runs, i.e. on CUDA): the real bf16
  Triton kernel (`select.kernel=fused`, the CUDA default). Triton's CPU interpreter cannot run a bf16
  `tl.dot`, so on a CPU only the emulation is measured.

Per sub-batch size b: the share of the chosen examples that differ from the baseline's (mean and worst
over draws), and the largest error of a candidate's gain along the baseline's chunks (nats).

Two sources of trained embeddings:
- `study` (`make bench-extended`): the curation bench's JEST learner (seed 0) embeds real super-batches
  of the bench pool (N = 5b, each draw a new super-batch from the stream); the reference's come from
  its score cache;
- `study_models` (`jestflow bench precision`, for GPU sizes): a learner and a reference model embed
  whole pools (one or more folders, e.g. demo pools written with different seeds); each draw takes N =
  5b rows at random (all of them when the pool has exactly N) and its own Gumbel draws.
"""

from __future__ import annotations

import statistics
import time

import torch

from .. import config as C
from .. import storage

SIZES = (32, 256, 1024)  # sub-batch b; super-batch N = 5b (filter ratio 0.8)
GPU_SIZES = (1024, 8192, 32768)
DRAWS = 8
BASELINE = "float32 selection, float16 cache"


def _int8(x: torch.Tensor) -> torch.Tensor:
    from ..training.score_cache import quantize

    q, scale = quantize(x.cpu())
    return (torch.from_numpy(q).float() * torch.from_numpy(scale)[:, None]).to(x.device)


def _generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def compare(learner, ref, b: int, chunks: int, seed: int, kernel: bool = False) -> dict[str, tuple[float, float]]:
    """Variant -> (share of the b chosen examples that changed, largest gain error in nats) for one draw.
    `kernel`: also the real fused kernel (where it cannot run it falls back to float32 and would
    measure nothing, so callers pass True on CUDA only)."""
    from ..core.selection import Embeds, FusedSigmoidScorer, SigmoidScorer, sample_chunks, score_terms

    def bf16(e: Embeds) -> Embeds:
        return Embeds(e.img.bfloat16().float(), e.txt.bfloat16().float(), e.log_t, e.bias)

    device = learner.img.device
    ref8 = Embeds(_int8(ref.img), _int8(ref.txt), ref.log_t, ref.bias)
    base_terms = score_terms("learnability", learner, ref)
    int8_terms = score_terms("learnability", learner, ref8)
    makers = {
        "int8 cache": lambda: SigmoidScorer(int8_terms),
        "bf16 selection": lambda: SigmoidScorer(score_terms("learnability", bf16(learner), bf16(ref))),
    }
    if kernel:
        makers["fused kernel"] = lambda: FusedSigmoidScorer(base_terms)
        makers["fused kernel + int8 cache"] = lambda: FusedSigmoidScorer(int8_terms)
    base = sample_chunks(SigmoidScorer(base_terms), b, chunks, _generator(seed, device))
    out = {}
    for name, make in makers.items():
        chosen = sample_chunks(make(), b, chunks, _generator(seed, device))
        changed = 1 - len(set(base.tolist()) & set(chosen.tolist())) / b
        out[name] = (changed, _gain_error(SigmoidScorer(base_terms), make(), base, chunks))
    return out


def _gain_error(a, v, chosen: torch.Tensor, chunks: int) -> float:
    """Largest |gain difference| between scorers `a` and `v`, before each chunk of the baseline's draw order."""
    c = len(chosen) // chunks
    worst = 0.0
    for k in range(chunks):
        worst = max(worst, float((a.logits() - v.logits()).abs().max()))
        idx = chosen[k * c : (k + 1) * c]
        a.add(idx)
        v.add(idx)
    return worst


def _summary(rows: dict[str, list[tuple[float, float]]]) -> dict:
    return {
        name: {
            "changed_mean": statistics.fmean(c for c, _ in r),
            "changed_max": max(c for c, _ in r),
            "gain_error_max": max(g for _, g in r),
        }
        for name, r in rows.items()
    }


def study(cfg: C.Config, st, sizes=SIZES, draws: int = DRAWS) -> dict:
    """On the curation bench's models and pool (CPU; the emulated bf16)."""
    from ..core.selection import Embeds
    from ..data.shards import ReadStats, stream
    from ..model.factory import load_model_dir
    from ..training.loader import make_batches
    from ..training.score_cache import ScoreCache
    from .curation import JEST

    model, tok = load_model_dir(storage.join(st.runs, f"{JEST}-s0"))
    model.eval()
    cache = ScoreCache(st.scores)
    chunks = cfg.select.n_chunks
    out = {"sizes": {}, "draws": draws, "n_chunks": chunks, "embed_dim": model.config.embed_dim,
           "device": "cpu", "source": "bench pool, one super-batch per draw"}  # fmt: skip
    for b in sizes:
        n = 5 * b
        samples = stream(
            storage.join(st.data, "pool"), 31 + b, 2000, ReadStats(max_bad_fraction=1.0), cfg.model.image_size
        )
        rows: dict[str, list] = {}
        for d, batch in zip(range(draws), make_batches(samples, n, tok)):
            with torch.no_grad():
                u, v = model(batch.images, batch.tokens)
            learner = Embeds(u.float(), v.float(), model.log_t.detach().float(), model.bias.detach().float())
            for name, r in compare(learner, cache.lookup(batch.uids, batch.shards), b, chunks, d).items():
                rows.setdefault(name, []).append(r)
        out["sizes"][str(b)] = _summary(rows)
    return out


def _embed(model, pools: list[str], tok, device: str, batch: int, workers: int) -> tuple[torch.Tensor, ...]:
    """Image and text embeddings (float32, on `device`) of the samples of `pools` in full batches of
    `batch` (a pool's last partial batch is left out; `study_models` reports how many were embedded)."""
    from ..data.shards import ReadStats, stream
    from ..training.loader import make_batches

    imgs, txts = [], []
    for pool in pools:
        samples = stream(pool, 0, 1, ReadStats(max_bad_fraction=1.0), model.config.image_size, epochs=1,
                         decode_workers=workers)  # fmt: skip
        for bt in make_batches(samples, batch, tok):
            with torch.inference_mode():
                u, v = model(bt.images.to(device, non_blocking=True), bt.tokens.to(device, non_blocking=True))
            imgs.append(u.float())
            txts.append(v.float())
    if not imgs:
        raise ValueError(f"no full batch of {batch} samples in {', '.join(pools)}")
    return torch.cat(imgs), torch.cat(txts)


def study_models(
    learner_dir: str,
    reference_dir: str,
    pools: list[str],
    sizes=GPU_SIZES,
    draws: int = 4,
    device: str = "auto",
    chunks: int = 16,
    batch: int = 4096,
    workers: int = 8,
) -> dict:
    """Precision on the embeddings two trained models give whole pools (see the module docstring).
    The reference's are rounded to float16, as the score cache stores them."""
    from ..core.kernels import triton_usable
    from ..core.selection import Embeds
    from ..model.factory import load_model_dir

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    t0 = time.time()
    embeds = []
    for folder in (learner_dir, reference_dir):
        model, tok = load_model_dir(folder, device)
        model.eval()
        img, txt = _embed(model, pools, tok, device, batch, workers)
        embeds.append((img, txt, model.log_t.detach().float(), model.bias.detach().float()))
    (li, lt, lT, lB), (ri, rt, rT, rB) = embeds
    ri, rt = ri.half().float(), rt.half().float()
    n_pool = len(li)
    kernel = torch.device(device).type == "cuda" and triton_usable(torch.device(device))
    out = {"sizes": {}, "draws": draws, "n_chunks": chunks, "embed_dim": li.shape[1], "device": device,
           "pool": n_pool, "embed_seconds": time.time() - t0,
           "source": "whole pools embedded by the two models; each draw N = 5b random rows"}  # fmt: skip
    for b in sizes:
        n = 5 * b
        if n > n_pool:
            out.setdefault("not_measured", []).append(f"b={b}: the pools hold {n_pool} samples, N = {n} needed")
            continue
        rows: dict[str, list] = {}
        t1 = time.time()
        for d in range(draws):
            pick = torch.randperm(n_pool, generator=torch.Generator().manual_seed(1000 + d))[:n].to(device)
            learner = Embeds(li[pick], lt[pick], lT, lB)
            ref = Embeds(ri[pick], rt[pick], rT, rB)
            for name, r in compare(learner, ref, b, chunks, d, kernel=kernel).items():
                rows.setdefault(name, []).append(r)
        out["sizes"][str(b)] = {**_summary(rows), "seconds": time.time() - t1}
    return out


def markdown(prec: dict) -> list[str]:
    """The precision table (one row per b, a column pair per variant) and the > 1% line."""
    sizes = dict(sorted(prec["sizes"].items(), key=lambda kv: int(kv[0])))  # JSON keys are strings: "1024" < "256"
    if not sizes:
        return []
    names = [k for k in next(iter(sizes.values())) if isinstance(next(iter(sizes.values()))[k], dict)]
    head = "| b (N = 5b) | " + " | ".join(f"{n}: changed, mean (worst) | {n}: largest gain error" for n in names)
    lines = [head + " |", "|---|" + "---|---|" * len(names)]
    for b, r in sizes.items():
        cells = [
            f"{r[n]['changed_mean']:.1%} ({r[n]['changed_max']:.1%}) | {r[n]['gain_error_max']:.3f}" for n in names
        ]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in names:
        over = [b for b, r in sizes.items() if r[n]["changed_mean"] > 0.01]
        at = f"at b = {', '.join(over)}" if over else "at none of these sizes"
        lines.append(f"- {n}: changes more than 1% of the choices {at}.")
    return lines


def write(prec: dict, out: str) -> str:
    """precision.json and precision.md under `out`; returns the Markdown."""
    head = (f"Selection precision on {prec['device']}: {prec['pool']} samples embedded by the two models "
            f"(d = {prec['embed_dim']}), {prec['draws']} draws per size, {prec['n_chunks']} chunks. Baseline: "
            f"{BASELINE}.")  # fmt: skip
    md = "\n".join([head, "", *markdown(prec), *(f"- not measured: {x}" for x in prec.get("not_measured", []))])
    storage.write_json(storage.join(out, "precision.json"), prec)
    storage.write_bytes(storage.join(out, "precision.md"), (md + "\n").encode())
    return md
