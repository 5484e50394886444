"""`jestflow bench curation`: does JEST pay off here? Every method, same model and budget, 3 seeds.

One reference and one scoring pass serve every curated method. Then, per seed, learners train with
`uniform`, `offline-easy-reference` (CLIP-score filtering with the reference), `independent`
(per-example learnability, RHO-LOSS style), `jest`, `flexi-jest` and `oracle` (clean samples only:
the upper bound of curation), plus JEST ablations of `n_chunks` and `filter_ratio` on seed 0. Runs
are resumable (a finished run is not redone) and spread over worker processes.

Outputs in OUT: results.json (everything, with the machine, command, date and version), bench.md
(tables), curve_iterations.png, curve_flops.png, noise_mix.png, chunk_learnability.png.
`scripts/benchmarks_md.py OUT BENCHMARKS.md` assembles the repository's BENCHMARKS.md from them.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from .. import __version__, storage
from .. import config as C
from ..core.flops import step_cost
from ..methods import METHODS
from .curation_report import BENCHMARKED, FLOPS_MATCHED, REPORTED

ABLATIONS = (("n_chunks", 1), ("n_chunks", 4), ("filter_ratio", 0.5), ("filter_ratio", 0.9))
METRICS = ("retrieval_r1", "i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5", "zeroshot_top1")


@dataclass(frozen=True)
class Job:
    name: str
    method: str
    seed: int
    overrides: tuple


# The batch-size ablation's methods: one of each way to curate with the reference (joint selection,
# per-example selection, the offline filter: JEST first), at one image resolution (no Flexi-JEST).
BATCH_METHODS = tuple(
    reversed([name for name in BENCHMARKED if METHODS[name].uses_reference and not METHODS[name].low_res_scoring])
)


def batch_job(cfg: C.Config, method: str, b: int) -> Job:
    """`method` at sub-batch `b` with as many examples seen as cfg's learner (and its warmup, in examples)."""
    t = cfg.learner
    steps = max(1, round(t.steps * t.batch_size / b))
    warmup = max(1, round(t.optim.warmup_steps * t.batch_size / b))
    knobs = (
        f"learner.batch_size={b}",
        f"learner.steps={steps}",
        f"learner.optim.warmup_steps={warmup}",
        f"learner.checkpoint_every={max(1, steps // 2)}",
        f"learner.eval_every={max(1, steps // 10)}",
    )
    return Job(f"{method}-b{b}-s0", method, 0, knobs)


def plan(
    cfg: C.Config,
    seeds: int,
    ablations: bool = True,
    matched: C.Config | None = None,
    batch_sizes: tuple[int, ...] = (),
) -> list[Job]:
    """Every benchmarked method per seed, uniform at JEST's total compute (`matched`, from
    flops.matched_uniform), the ablations, and (`batch_sizes`) JEST, independent selection and the
    offline filter at other sub-batch sizes with equal examples seen; the costliest runs first, so both
    workers stay busy."""
    jobs = [Job(f"{m}-s{s}", m, s, ()) for s in range(seeds) for m in BENCHMARKED]
    if matched is not None:
        knobs = (f"learner.steps={matched.learner.steps}", f"learner.eval_every={matched.learner.eval_every}")
        jobs += [Job(f"{FLOPS_MATCHED}-s{s}", "uniform", s, knobs) for s in range(seeds)]
    if ablations:
        for key, value in ABLATIONS:
            jobs.append(Job(f"jest-{key}{value}-s0", "jest", 0, (f"select.{key}={value}",)))
    jobs += [batch_job(cfg, m, b) for b in batch_sizes for m in BATCH_METHODS if b != cfg.learner.batch_size]

    def flops(job: Job) -> float:
        c = C.override(cfg.with_method(job.method), list(job.overrides))
        return c.learner.steps * step_cost(c).total

    return sorted(jobs, key=lambda j: -flops(j))


def _run_job(job: Job, preset: str, overrides: list, data: str, scores: str, out: str, threads: int) -> str:
    """One learner in a worker process (its own torch threads); returns the run folder."""
    import torch

    from .. import stages

    torch.set_num_threads(threads)
    run_dir = storage.join(out, "runs", job.name)
    if storage.exists(storage.join(run_dir, "train.json")):
        return run_dir
    cfg = C.load_config(
        preset,
        None,
        [
            *overrides,
            f"select.method={job.method}",
            f"learner.seed={job.seed}",
            f"learner.threads={threads}",
            *job.overrides,
        ],
    )
    stages.train_learner(cfg, storage.join(data, "pool"), run_dir, scores, storage.join(data, "eval"), progress=False)
    return run_dir


def _stat(values: list) -> dict:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def aggregate(runs: dict[str, dict], seeds: int) -> dict:
    """Per method: mean and spread over seeds of final metrics, speed-ups against uniform, oracle share."""
    from ..core.flops import payoff, run_total
    from ..reporting.run_report import TARGET_FRACTIONS, compare, compare_targets

    per_method: dict[str, dict] = {}
    for m in REPORTED:
        names = [f"{m}-s{s}" for s in range(seeds) if f"{m}-s{s}" in runs]
        rows = []
        for n in names:
            s = runs[n]
            seed = n.rsplit("-s", 1)[1]
            uni = runs.get(f"uniform-s{seed}")
            final = s["curve"][-1]
            entry = {
                "final": {k: final.get(k) for k in METRICS},
                "total_flops": run_total(s),
                "learner_flops": s["flops_total"],
                "clean_fraction": s["clean_fraction"],
                "wall_seconds": s["wall_seconds"],
                "steps": s["steps"],
            }
            if uni is not None:
                pair = {"uniform": {"summary": uni, "final": uni["curve"][-1]}, m: {"summary": s, "final": final}}
                for metric in ("retrieval_r1", "zeroshot_top1"):
                    entry[f"speedup_{metric}"] = compare(pair, "uniform", metric)[m]
                entry["targets"] = {f: c[m] for f, c in compare_targets(pair, "uniform", "retrieval_r1").items()}
                c = entry["speedup_retrieval_r1"]
                if c["learner_flops_to_target"]:
                    uniform_flops = uni["flops_total"]  # uniform reaches its own final score at its last step
                    entry["payoff"] = payoff(uniform_flops, c["learner_flops_to_target"], c["fixed_flops"])
            rows.append(entry)
        if not rows:
            continue
        agg = {k: _stat([r["final"][k] for r in rows]) for k in METRICS}
        for k in ("total_flops", "learner_flops", "clean_fraction", "wall_seconds"):
            agg[k] = _stat([r[k] for r in rows])
        for metric in ("retrieval_r1", "zeroshot_top1"):
            key = f"speedup_{metric}"
            agg[f"iteration_speedup_{metric}"] = _stat([r[key]["iteration_speedup"] for r in rows if key in r])
            agg[f"flops_speedup_{metric}"] = _stat([r[key]["flops_speedup"] for r in rows if key in r])
            agg[f"reached_{metric}"] = sum(1 for r in rows if key in r and r[key]["iteration_speedup"])
            agg[f"lower_bound_{metric}"] = sum(1 for r in rows if key in r and r[key]["lower_bound"])
        agg["learner_flops_speedup_retrieval_r1"] = _stat(
            [r["speedup_retrieval_r1"]["learner_flops_speedup"] for r in rows if "speedup_retrieval_r1" in r]
        )
        agg["targets"] = {
            str(f): {
                "iteration_speedup": _stat(
                    [r["targets"][f]["iteration_speedup"] for r in rows if f in r.get("targets", {})]
                ),
                "learner_flops_speedup": _stat(
                    [r["targets"][f]["learner_flops_speedup"] for r in rows if f in r.get("targets", {})]
                ),
                "lower_bound": sum(1 for r in rows if r.get("targets", {}).get(f, {}).get("lower_bound")),
            }
            for f in TARGET_FRACTIONS
        }
        pays = [r["payoff"] for r in rows if "payoff" in r]
        agg["payoff"] = {k: _stat([p[k] for p in pays]) for k in pays[0]} if pays else {}
        agg["seeds"] = len(rows)
        per_method[m] = agg
    if "uniform" in per_method and "oracle" in per_method:
        u, o = per_method["uniform"]["retrieval_r1"]["mean"], per_method["oracle"]["retrieval_r1"]["mean"]
        for agg in per_method.values():
            agg["oracle_gain_share"] = (agg["retrieval_r1"]["mean"] - u) / (o - u) if o != u else None
    return per_method


def equal_flops_comparison(runs: dict, seeds: int) -> dict:
    """Each method's retrieval R@1 at the total compute of JEST's final point, read off its curve."""
    from ..reporting.run_report import curve_points, value_at

    out = {}
    for s in range(seeds):
        jest = runs.get(f"jest-s{s}")
        if not jest:
            continue
        budget = curve_points(jest, "retrieval_r1", True)[1][-1]
        for m in REPORTED:
            r = runs.get(f"{m}-s{s}")
            if r is None:
                continue
            _, fl, ys = curve_points(r, "retrieval_r1", True)
            v = value_at(fl, ys, budget)
            out.setdefault(m, []).append(v if v is not None else (ys[-1] if fl and fl[-1] <= budget else None))
    return {m: _stat(v) for m, v in out.items()}


def chunk_diagnostics(cfg: C.Config, data: str, scores: str, model_dir: str, n_batches: int = 8) -> dict:
    """Mean pairwise learnability of the chosen set after each chunk, against random sets of the same
    size from the same super-batches, with the trained JEST learner (dense matrices: N is small)."""
    import torch

    from ..core.selection import DenseScorer, Embeds, dense_score_matrix, sample_chunks, score_terms
    from ..data.shards import ReadStats, stream
    from ..model.tokenizer import Tokenizer
    from ..model.two_tower import load_model
    from ..training.loader import make_batches
    from ..training.score_cache import ScoreCache

    model = load_model(storage.join(model_dir, "model.pt")).eval()
    tok = Tokenizer.load(storage.join(model_dir, "tokenizer.json"))
    cache = ScoreCache(scores)
    b, n = cfg.learner.batch_size, cfg.super_batch_size()
    c = b // cfg.select.n_chunks
    gen = torch.Generator().manual_seed(123)
    samples = stream(storage.join(data, "pool"), 999, 1000, ReadStats(max_bad_fraction=1.0), cfg.model.image_size)
    chosen_curves, random_curves = [], []
    for _, batch in zip(range(n_batches), make_batches(samples, n, tok)):
        with torch.no_grad():
            u, v = model(batch.images, batch.tokens)
        lrn = Embeds(u, v, model.log_t.detach(), model.bias.detach())
        A = dense_score_matrix(score_terms("learnability", lrn, cache.lookup(batch.uids)))
        idx = sample_chunks(DenseScorer(A), b, cfg.select.n_chunks, gen)
        rnd = torch.randperm(n, generator=gen)[:b]

        def mean_score(sub):
            return float(A[sub][:, sub].mean())

        chosen_curves.append([mean_score(idx[: (k + 1) * c]) for k in range(cfg.select.n_chunks)])
        random_curves.append([mean_score(rnd[: (k + 1) * c]) for k in range(cfg.select.n_chunks)])
    mean = lambda rows: [statistics.fmean(col) for col in zip(*rows)]  # noqa: E731
    return {"chunk_size": c, "chosen": mean(chosen_curves), "random": mean(random_curves), "batches": n_batches}


def batch_rows(runs: dict, cfg: C.Config, batch_sizes) -> list[dict]:
    """Final retrieval R@1 per method and sub-batch size at equal examples seen (seed 0)."""
    from ..core.flops import run_total

    rows = []
    for b in sorted({cfg.learner.batch_size, *batch_sizes}):
        for m in BATCH_METHODS:
            r = runs.get(f"{m}-s0" if b == cfg.learner.batch_size else f"{m}-b{b}-s0")
            if r:
                rows.append(
                    {
                        "method": m,
                        "batch_size": b,
                        "steps": r["steps"],
                        "examples_seen": r["examples_seen"],
                        "retrieval_r1": r["curve"][-1]["retrieval_r1"],
                        "total_flops": run_total(r),
                        "clean_fraction": r["clean_fraction"],
                    }
                )
    return rows


def ablation_rows(runs: dict) -> list[dict]:
    rows = []
    base = runs.get("jest-s0")
    if base:
        rows.append({"setting": "n_chunks=16, filter_ratio=0.8 (default)", "run": base})
    for key, value in ABLATIONS:
        r = runs.get(f"jest-{key}{value}-s0")
        if r:
            rows.append({"setting": f"{key}={value}", "run": r})
    from ..core.flops import run_total

    return [
        {
            "setting": x["setting"],
            "retrieval_r1": x["run"]["curve"][-1]["retrieval_r1"],
            "zeroshot_top1": x["run"]["curve"][-1].get("zeroshot_top1"),
            "clean_fraction": x["run"]["clean_fraction"],
            "total_flops": run_total(x["run"]),
            "wall_seconds": x["run"]["wall_seconds"],
        }
        for x in rows
    ]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def bench_curation(
    preset: str,
    overrides: list,
    out: str,
    seeds: int = 3,
    workers: int = 2,
    ablations: bool = True,
    command: str = "",
    config_file: str | None = None,
    batch_sizes: tuple[int, ...] = (),
) -> dict:
    """`config_file` applies before `overrides` (as in every command); both reach every worker.
    `batch_sizes` adds the batch-size ablation (`plan`)."""
    from .. import stages
    from ..data.demo import demo_complete, make_demo

    t0 = time.time()
    overrides = [*(C.file_overrides(config_file) if config_file else []), *overrides]
    cfg = C.load_config(preset, None, overrides)
    data = storage.join(out, "data")
    if not demo_complete(data):
        print(f"[bench] writing {preset} demo data", flush=True)
        make_demo(data, cfg.demo)
    ref, scores = storage.join(out, "reference"), storage.join(out, "scores")
    if not storage.exists(storage.join(ref, "train.json")):
        print("[bench] training the reference", flush=True)
        stages.train_reference(cfg, storage.join(data, "curated"), ref, progress=False)
    if not storage.exists(storage.join(scores, "index.json")):
        print("[bench] scoring the pool", flush=True)
        stages.score(cfg, ref, storage.join(data, "pool"), scores, progress=False)
    jobs = plan(cfg, seeds, ablations, stages.flops_matched(cfg, "jest", scores), batch_sizes)
    # Wall time adds up over the invocations that trained these runs (a resumed bench reuses finished ones).
    earlier = storage.join(out, "results.json")
    todo = [j for j in jobs if not storage.exists(storage.join(out, "runs", j.name, "train.json"))]
    reused = len(todo) < len(jobs)
    previous = storage.read_json(earlier) if reused and storage.exists(earlier) else {}
    extras = {batch_job(cfg, m, b).name for b in batch_sizes for m in BATCH_METHODS}
    threads = max(1, (os.cpu_count() or 2) // workers)
    print(f"[bench] {len(jobs)} learner runs on {workers} workers x {threads} threads", flush=True)
    done = 0
    with ProcessPoolExecutor(workers) as pool:
        futs = {pool.submit(_run_job, j, preset, overrides, data, scores, out, threads): j for j in jobs}
        for f in as_completed(futs):
            f.result()
            done += 1
            print(f"[bench] {done}/{len(jobs)} done: {futs[f].name} ({time.time() - t0:.0f} s)", flush=True)
    results = finish(out, jobs, cfg, preset, overrides, seeds, command, data, scores, ref, batch_sizes=batch_sizes)
    seconds = time.time() - t0
    results["wall_seconds"] = previous.get("wall_seconds", 0.0) + seconds
    # Each invocation's time and what it trained: `make bench`'s own time is that of the invocations
    # that trained no batch-size runs (those belong to `make bench-extended`).
    invocation = {
        "command": command,
        "seconds": seconds,
        "trained": len(todo),
        "batch_size_runs": sum(j.name in extras for j in todo),
    }
    results["invocations"] = [*previous.get("invocations", []), invocation]
    return publish(results, out, jobs, seeds)


def finish(
    out, jobs, cfg, preset, overrides, seeds, command, data, scores, ref, diagnostics=None, batch_sizes=()
) -> dict:
    runs = {j.name: storage.read_json(storage.join(out, "runs", j.name, "train.json")) for j in jobs}
    per_method = aggregate(runs, seeds)
    return {
        "preset": preset,
        "overrides": overrides,
        "seeds": seeds,
        "version": __version__,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
        "per_method": per_method,
        "equal_flops_retrieval_r1": equal_flops_comparison(runs, seeds),
        "ablations": ablation_rows(runs),
        "batch_sizes": list(batch_sizes),
        "batch_ablation": batch_rows(runs, cfg, batch_sizes),
        "chunk_learnability": diagnostics or chunk_diagnostics(cfg, data, scores, storage.join(out, "runs", "jest-s0")),
        "reference": {k: storage.read_json(storage.join(ref, "train.json"))[k] for k in ("steps", "flops_total")},
        "scoring_flops": storage.read_json(storage.join(scores, "index.json"))["scoring_flops"],
        "config": C.to_dict(cfg),
    }


def publish(results: dict, out: str, jobs, seeds: int) -> dict:
    """results.json, the plots and bench.md in OUT (scripts/benchmarks_md.py turns them into BENCHMARKS.md)."""
    from .curation_report import plots, render

    runs = {j.name: storage.read_json(storage.join(out, "runs", j.name, "train.json")) for j in jobs}
    plots(runs, results, seeds, out)
    storage.write_json(storage.join(out, "results.json"), results)
    md = render(results)
    storage.write_bytes(storage.join(out, "bench.md"), md.encode())
    print(md)
    return results


def rerender(out: str) -> dict:
    """Recompute tables and plots from the finished runs of an earlier `bench curation` in OUT, keeping
    its measured wall time, command and date (no training)."""
    from .. import stages

    old = storage.read_json(storage.join(out, "results.json"))
    cfg = C.from_dict(old["config"])
    scores = storage.join(out, "scores")
    batch_sizes = tuple(old.get("batch_sizes", ()))
    jobs = plan(cfg, old["seeds"], bool(old["ablations"]), stages.flops_matched(cfg, "jest", scores), batch_sizes)
    new = finish(
        out,
        jobs,
        cfg,
        old["preset"],
        old["overrides"],
        old["seeds"],
        old["command"],
        storage.join(out, "data"),
        scores,
        storage.join(out, "reference"),
        old["chunk_learnability"],
        batch_sizes=batch_sizes,
    )
    new.update({k: old[k] for k in ("wall_seconds", "date", "machine", "invocations") if k in old})
    return publish(new, out, jobs, old["seeds"])
