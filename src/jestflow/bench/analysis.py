"""From the curation benchmark's finished runs to the numbers its report states, each with its interval.

Inputs: every run's `train.json` (its last evaluation keeps each query's outcome) by part, as
curation.py planned them. Every figure is a mean over seeds of retrieval R@1 on the held-out split, or
a statistic of such means, with a 95% interval from `intervals.Bootstrap` (seeds and queries resampled,
paired). Nothing is read off a learning curve here: each number comes from a complete run.
"""

from __future__ import annotations

import math
import re
import statistics

import numpy as np

from .. import config as C
from .. import storage
from ..core.flops import fixed_total, run_total
from ..reporting.run_report import CHANCE_FACTOR, above_chance
from .intervals import Bootstrap, Hits, budget_to_match, interval, score_at, verdict

REPLICATES = 2000
TEN_X_CHANCE = 10  # uniform's 1x R@1 must be this many times chance in every seed (issue 24)
MAX_QUERY_SE = 0.10  # and its standard error over queries at most this share of it


def _seeds(runs: dict, name: str, seeds: int) -> list[dict]:
    return [runs[f"{name}-s{s}"] for s in range(seeds) if f"{name}-s{s}" in runs]


class Means:
    """A set of runs' seed-mean R@1, full-data and per replicate."""

    def __init__(self, bs: Bootstrap, summaries: list[dict]):
        hits = [Hits.of(s) for s in summaries]
        self.n = len(hits)
        self.per_seed = [h.r1 for h in hits]
        self.value = statistics.fmean(self.per_seed)
        self.reps = bs.seed_mean([bs.r1(h) for h in hits]) if self.n == bs.n_seeds else np.full(bs.replicates, np.nan)
        self.summaries = summaries

    def interval(self) -> dict:
        return interval(self.value, self.reps)


def _mean(summaries: list[dict], key) -> float:
    return statistics.fmean(key(s) for s in summaries)


def analyse(cfg: C.Config, runs: dict, seeds: int, studies: dict, indexes: dict, out: str) -> dict:
    main = runs["main"]
    n_eval = main["uniform-x1-s0"]["curve"][-1]["n"]
    bs = Bootstrap(n_eval, seeds, REPLICATES)
    res = {"main": analyse_main(cfg, main, seeds, bs)}
    res["chunk_learnability"] = chunk_diagnostics(cfg, studies["main"])
    if "lr-sweep" in runs:
        res["lr_sweep"] = analyse_sweep(main, runs["lr-sweep"], Bootstrap(n_eval, 2, REPLICATES, seed=1))
        res["reference_strength"] = analyse_references(cfg, main, runs["reference-strength"], seeds, bs, res, studies)
        res["long_tail"] = analyse_longtail(runs["long-tail"], seeds, studies["long-tail"])
        res["ablations"] = analyse_single(main, runs["ablations"], bs)
        res["batch_ablation"] = analyse_single(main, runs["batch-sizes"], bs, batch=True)
        if "models" in runs:
            res["models"] = analyse_models(cfg, main, runs["models"], seeds, bs, studies)
        if storage.exists(storage.join(out, "precision.json")):
            res["precision"] = storage.read_json(storage.join(out, "precision.json"))
    return res


def ladder_of(main: dict, seeds: int, bs: Bootstrap, ladder) -> dict:
    rungs = {k: Means(bs, _seeds(main, f"uniform-x{k:g}", seeds)) for k in ladder}
    return {k: r for k, r in rungs.items() if r.n}


def analyse_main(cfg: C.Config, main: dict, seeds: int, bs: Bootstrap) -> dict:
    from .curation import CURATED, JEST, LADDER

    rungs = ladder_of(main, seeds, bs, LADDER)
    ks = list(rungs)
    base = rungs[1]
    u1_steps = _mean(base.summaries, lambda s: s["steps"])
    u1_flops = _mean(base.summaries, lambda s: s["flops_total"])  # uniform pays no fixed cost
    chance = base.summaries[0]["curve"][-1]["retrieval_chance"]
    ladder = {
        f"{k:g}": {
            "steps": _mean(r.summaries, lambda s: s["steps"]),
            "total_flops": _mean(r.summaries, run_total),
            "retrieval_r1": r.interval(),
            "per_seed": r.per_seed,
            "wall_seconds": _mean(r.summaries, lambda s: s["wall_seconds"]),
        }
        for k, r in rungs.items()
    }

    def budget(value: float, r: int | None) -> float:
        scores = [rungs[k].value if r is None else rungs[k].reps[r] for k in ks]
        return budget_to_match(ks, scores, value)

    methods = {}
    for m in CURATED:
        runs = _seeds(main, m, seeds)
        if not runs:
            continue
        mean = Means(bs, runs)
        steps, total, learner = (_mean(runs, f) for f in (lambda s: s["steps"], run_total, lambda s: s["flops_total"]))
        k_full = budget(mean.value, None)
        k_reps = np.array([budget(mean.reps[r], r) for r in range(bs.replicates)])

        def speedup(scale: float) -> dict:
            """The budget reading in other units; `top`/`bottom`: the ladder's ends in those units."""
            return {**interval(k_full * scale, k_reps * scale), "top": max(ks) * scale, "bottom": min(ks) * scale}

        entry = {
            "steps": steps,
            "total_flops": total,
            "learner_flops": learner,
            "fixed_flops": _mean(runs, fixed_total),
            "retrieval_r1": mean.interval(),
            "per_seed": mean.per_seed,
            "uniform_budget": speedup(1.0),  # in multiples of uniform's 1x run
            "iteration_speedup": speedup(u1_steps / steps),
            "total_flops_speedup": speedup(u1_flops / total),
            "learner_flops_speedup": speedup(u1_flops / learner),
            "clean_fraction": _mean(runs, lambda s: s["clean_fraction"]),
            "wall_seconds": _mean(runs, lambda s: s["wall_seconds"]),
            "zeroshot_top1": _mean(runs, lambda s: s["curve"][-1].get("zeroshot_top1", math.nan)),
            "noise_mix": _mix(runs, "noise_mix"),
        }
        entry["payoff"] = _payoff(entry, u1_flops)
        methods[m] = (entry, mean)

    # at equal total compute: JEST's; uniform read off its ladder between complete runs (log budget)
    c = methods[JEST][0]["total_flops"]
    at = c / u1_flops

    def uniform_at(r: int | None) -> float:
        return score_at(ks, [rungs[k].value if r is None else rungs[k].reps[r] for k in ks], at)

    u_full = uniform_at(None)
    u_reps = np.array([uniform_at(r) for r in range(bs.replicates)])
    jest = methods[JEST][1]
    equal = {"total_flops": c, "uniform_budget": at, "uniform": {"retrieval_r1": interval(u_full, u_reps)}}
    equal["uniform"]["jest_minus"] = interval(jest.value - u_full, jest.reps - u_reps)
    equal["uniform"]["verdict"] = verdict(equal["uniform"]["jest_minus"])
    for m, (entry, mean) in methods.items():
        if m == JEST:
            continue
        off = abs(entry["total_flops"] - c) / c
        e = {
            "retrieval_r1": mean.interval(),
            "compute_off": off,
            "jest_minus": interval(jest.value - mean.value, jest.reps - mean.reps),
        }  # noqa: E501
        e["verdict"] = verdict(e["jest_minus"])
        equal[m] = e

    zs_u = _mean(base.summaries, lambda s: s["curve"][-1].get("zeroshot_top1", math.nan))
    zs_chance = base.summaries[0]["curve"][-1].get("zeroshot_chance")
    query_se = [bs.query_se(Hits.of(s)) for s in base.summaries]
    return {
        "budget_steps": u1_steps,
        "uniform_1x_flops": u1_flops,
        "reference_fixed_flops": methods[JEST][0]["fixed_flops"],
        "ladder": ladder,
        "methods": {m: e for m, (e, _) in methods.items()},
        "equal_compute": equal,
        "chance": {
            "retrieval": chance,
            "uniform_1x_per_seed_x_chance": [v / chance for v in base.per_seed],
            "ten_x_chance_every_seed": all(v >= TEN_X_CHANCE * chance for v in base.per_seed),
            "query_se_share": [se / v for se, v in zip(query_se, base.per_seed)],
            "zeroshot": zs_chance,
            "uniform_zeroshot": zs_u,
            "zeroshot_above_chance": above_chance(zs_u, zs_chance),
            "factor": CHANCE_FACTOR,
        },
        "replicates": bs.replicates,
    }


def _mix(runs: list[dict], key: str) -> dict:
    kinds = sorted({k for s in runs for k in s.get(key, {})})
    return {k: statistics.fmean(s.get(key, {}).get(k, 0.0) for s in runs) for k in kinds}


def _payoff(entry: dict, u1_flops: float) -> dict | None:
    """Runs sharing one reference before it pays for itself, from uniform's learner FLOPs to the method's
    score (ladder) against the method's learner FLOPs, at the measured budget; None for no fixed cost."""
    from ..core.flops import payoff

    fixed = entry["fixed_flops"]
    k = entry["uniform_budget"]["value"]
    if not fixed:
        return None
    if not math.isfinite(k):
        return {"open": "above" if k > 0 else "below"}
    return payoff(k * u1_flops, entry["learner_flops"], fixed)


def analyse_sweep(main: dict, sweep: dict, bs: Bootstrap) -> dict:
    """R@1 of uniform and JEST at 1x per peak learning rate, over SWEEP_SEEDS seeds."""
    from .curation import JEST, SWEEP_LRS, SWEEP_SEEDS, learning_rate

    out = {}
    for m, main_name in (("uniform", "uniform-x1"), (JEST, JEST)):
        rows, means = {}, {}
        for lr in SWEEP_LRS:
            used = lr == learning_rate(m)
            name, source = (main_name, main) if used else (f"{m}-lr{lr:g}", sweep)
            runs = [source[f"{name}-s{s}"] for s in range(SWEEP_SEEDS) if f"{name}-s{s}" in source]
            if len(runs) == SWEEP_SEEDS:
                means[f"{lr:g}"] = mean = Means(bs, runs)
                rows[f"{lr:g}"] = {"retrieval_r1": mean.interval(), "per_seed": mean.per_seed}
        used = f"{learning_rate(m):g}"
        if rows and used in means:
            best = max(rows, key=lambda lr: rows[lr]["retrieval_r1"]["value"])
            b, u = means[best], means[used]
            diff = interval(b.value - u.value, b.reps - u.reps)
            out[m] = {"rows": rows, "best": best, "used": used, "best_minus_used": diff}
    return out


def analyse_references(cfg, main: dict, ref_runs: dict, seeds: int, bs: Bootstrap, res: dict, studies) -> dict:
    """JEST (1x) and the filter (at JEST's total compute) with references of several strengths; the
    preset's reference is the main part's."""
    from .curation import JEST

    filt = "offline-easy-reference"
    out = {}
    others = sorted({int(n.split("/")[0].split("-")[1]) for n in ref_runs})
    for steps in (cfg.reference.steps, *others):
        if steps == cfg.reference.steps:
            pick, study = (lambda name: _seeds(main, name, seeds)), studies["main"]
        else:
            pick = lambda name, r=_in_study(ref_runs, f"reference-{steps}"): _seeds(r, name, seeds)  # noqa: E731
            study = studies[f"reference-{steps}"]
        j, f = pick(JEST), pick(filt)
        if len(j) < seeds or len(f) < seeds:
            continue
        jm, fm = Means(bs, j), Means(bs, f)
        out[str(steps)] = {
            "reference_r1": reference_quality(cfg, study),
            "fixed_flops": _mean(j, fixed_total),
            "jest": jm.interval(),
            "filter": fm.interval(),
            "jest_minus_filter": interval(jm.value - fm.value, jm.reps - fm.reps),
            "total_flops": _mean(j, run_total),
        }
        out[str(steps)]["verdict"] = verdict(out[str(steps)]["jest_minus_filter"])
    return out


def _in_study(runs: dict, study: str) -> dict:
    """A part over several studies keeps its runs as "study/name": the runs of one, by name."""
    return {k[len(study) + 1 :]: v for k, v in runs.items() if k.startswith(f"{study}/")}


def analyse_models(cfg, main: dict, model_runs: dict, seeds: int, bs: Bootstrap, studies) -> dict:
    """The integration check: JEST's gain over uniform at equal total compute with each architecture (similar
    sizes: their forward FLOPs per example are shown), and JEST with a SigLIP reference brought in as a hub
    folder against the same architecture's own, pipeline-trained reference (both at 1x: equal iterations)."""
    from .curation import JEST

    out = {"archs": {}}
    means = {}
    for arch, name in (("vit", "main"), ("hf-siglip", "hf-siglip")):
        runs = _in_study(model_runs, name)
        j = _seeds(main if name == "main" else runs, JEST, seeds)
        u = _seeds(runs, "uniform-eqflops", seeds)
        if len(j) < seeds or len(u) < seeds:
            continue
        jm, um = Means(bs, j), Means(bs, u)
        means[arch] = (jm, um)
        gain = interval(jm.value - um.value, jm.reps - um.reps)
        out["archs"][arch] = {
            "reference_r1": reference_quality(cfg, studies[name]),
            "forward_flops_per_example": j[0]["forward_flops_per_example"],
            "total_flops": _mean(j, run_total),
            "uniform_steps": _mean(u, lambda s: s["steps"]),
            "jest": jm.interval(),
            "uniform": um.interval(),
            "jest_minus_uniform": gain,
            "verdict": verdict(gain),
        }
    if len(means) == 2:  # the gains of the two, paired replicate by replicate
        (hj, hu), (vj, vu) = means["hf-siglip"], means["vit"]
        d = interval((hj.value - hu.value) - (vj.value - vu.value), (hj.reps - hu.reps) - (vj.reps - vu.reps))
        out["gain_hf_minus_vit"] = {**d, "verdict": verdict(d, "is larger than")}
    byo = _seeds(_in_study(model_runs, "byo-reference"), JEST, seeds)
    if len(byo) == seeds and "hf-siglip" in means:
        bm, own = Means(bs, byo), means["hf-siglip"][0]
        d = interval(bm.value - own.value, bm.reps - own.reps)
        out["byo_reference"] = {
            "steps": C.override(cfg, list(studies["byo-reference"].sets)).reference.steps,
            "own_steps": cfg.reference.steps,
            "reference_r1": reference_quality(cfg, studies["byo-reference"]),
            "jest": bm.interval(),
            "jest_own_reference": own.interval(),
            "byo_minus_own": d,
            "verdict": verdict(d),
        }
    return out


def reference_quality(cfg: C.Config, study) -> float | None:
    """The reference's own retrieval R@1 on the held-out split (measured once, kept beside it; a reference
    brought in as a hub folder is measured where it was trained)."""
    from .. import stages

    where = getattr(study, "trained", "") or study.reference
    cached = storage.join(where, "eval.json")
    if not storage.exists(cached):
        stages.evaluate_model(cfg, where, storage.join(study.data, "eval"), cached)
    return storage.read_json(cached)["retrieval_r1"]


def analyse_longtail(lt: dict, seeds: int, study) -> dict:
    """Oracle, filter, independent, uniform at JEST's total compute on the long-tail pool: R@1 overall and
    per group (head, tail) with intervals, and the head share of what each trained on, over training."""
    from .curation import JEST, LONGTAIL

    first = next(iter(lt.values()), None)
    if first is None:
        return {}
    bs = Bootstrap(first["curve"][-1]["n"], seeds, REPLICATES, seed=2)
    means = {m: Means(bs, _seeds(lt, m, seeds)) for m in LONGTAIL if len(_seeds(lt, m, seeds)) == seeds}
    out = {"methods": {}}
    for m, mean in means.items():
        runs = mean.summaries
        out["methods"][m] = {
            "retrieval_r1": mean.interval(),
            "per_group": {g: _mean(runs, lambda s, g=g: s["curve"][-1][f"retrieval_r1_{g}"]) for g in ("head", "tail")},
            "head_share": _mean(runs, lambda s: s.get("group_mix", {}).get("head", math.nan)),
            "head_share_over_training": _window_share(runs, "head"),
            "clean_fraction": _mean(runs, lambda s: s["clean_fraction"]),
            "total_flops": _mean(runs, run_total),
            "steps": _mean(runs, lambda s: s["steps"]),
        }
        if m != JEST and JEST in means:
            d = interval(means[JEST].value - mean.value, means[JEST].reps - mean.reps)
            out["methods"][m].update(jest_minus=d, verdict=verdict(d))
    demo = storage.read_json(storage.join(study.data, "demo.json"))
    out["head_concepts"] = demo.get("head_concepts", [])
    out["pool_head_share"] = demo["config"]["head_share"]
    return out


def _window_share(runs: list[dict], group: str) -> list[tuple[float, float]]:
    """(step, share of `group` among the examples trained since the previous evaluation), seed-averaged."""
    pts = []
    for i, p in enumerate(runs[0]["curve"]):
        shares = []
        for s in runs:
            w = s["curve"][i].get("groups_window", {}) if i < len(s["curve"]) else {}
            if sum(w.values()):
                shares.append(w.get(group, 0) / sum(w.values()))
        if shares:
            pts.append((p["step"], statistics.fmean(shares)))
    return pts


def analyse_single(main: dict, part: dict, bs: Bootstrap, batch: bool = False) -> list[dict]:
    """Seed-0 runs with their R@1's interval over queries alone (one seed: no seed spread to resample)."""
    from .curation import BATCH_METHODS, JEST

    if batch:
        sizes = sorted({int(m.group(1)) for n in part if (m := re.search(r"-b(\d+)-s\d+$", n))})
        b0 = main[f"{JEST}-s0"]["batch_size"]
        names = [(f"{m}-s0" if (m, b) == (JEST, b0) else f"{m}-b{b}-s0", m, b)
                 for b in sorted({b0, *sizes}) for m in BATCH_METHODS]  # fmt: skip
    else:
        names = [(f"{JEST}-s0", JEST, None)] + [(n, JEST, None) for n in part]
    rows = []
    for name, method, b in names:
        s = part.get(name) or main.get(name)
        if not s:
            continue
        h = Hits.of(s)
        reps = bs.r1(h)
        row = {"run": name, "method": method, "retrieval_r1": interval(h.r1, reps), "steps": s["steps"],
               "total_flops": run_total(s), "clean_fraction": s["clean_fraction"],
               "examples_seen": s["examples_seen"]}  # fmt: skip
        if b is not None:
            row["batch_size"] = b
        rows.append(row)
    return rows


def chunk_diagnostics(cfg: C.Config, study, n_batches: int = 8) -> dict:
    """Mean pairwise learnability of the chosen set after each chunk, against random sets of the same
    size from the same super-batches, with the trained JEST learner of seed 0 (dense matrices: N is small)."""
    import torch

    from ..core.selection import DenseScorer, Embeds, dense_score_matrix, sample_chunks, score_terms
    from ..data.shards import ReadStats, stream
    from ..model.factory import load_model_dir
    from ..training.loader import make_batches
    from ..training.score_cache import ScoreCache
    from .curation import JEST

    model, tok = load_model_dir(storage.join(study.runs, f"{JEST}-s0"))
    model.eval()
    cache = ScoreCache(study.scores)
    jcfg = cfg.with_method(JEST)
    b, n = jcfg.learner.batch_size, jcfg.super_batch_size()
    c = b // jcfg.select.n_chunks
    gen = torch.Generator().manual_seed(123)
    samples = stream(storage.join(study.data, "pool"), 999, 1000, ReadStats(max_bad_fraction=1.0), cfg.model.image_size)
    chosen_curves, random_curves = [], []
    for _, batch in zip(range(n_batches), make_batches(samples, n, tok)):
        with torch.no_grad():
            u, v = model(batch.images, batch.tokens)
        lrn = Embeds(u, v, model.log_t.detach(), model.bias.detach())
        A = dense_score_matrix(score_terms("learnability", lrn, cache.lookup(batch.uids, batch.shards)))
        idx = sample_chunks(DenseScorer(A), b, jcfg.select.n_chunks, gen)
        rnd = torch.randperm(n, generator=gen)[:b]

        def mean_score(sub):
            return float(A[sub][:, sub].mean())

        chosen_curves.append([mean_score(idx[: (k + 1) * c]) for k in range(jcfg.select.n_chunks)])
        random_curves.append([mean_score(rnd[: (k + 1) * c]) for k in range(jcfg.select.n_chunks)])
    mean = lambda rows: [statistics.fmean(col) for col in zip(*rows)]  # noqa: E731
    return {"chunk_size": c, "chosen": mean(chosen_curves), "random": mean(random_curves), "batches": n_batches}
