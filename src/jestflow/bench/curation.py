"""`jestflow bench curation`: does JEST pay off here? Measured the paper's way, with intervals.

**Main (`make bench`).** One reference and one scoring pass serve every curated method. Uniform trains at
`LADDER` budgets (multiples of the learner budget), each a complete run with its own schedule: the ruler
every other method is read against. JEST trains at 1x; the other benchmarked methods (the offline
CLIP-score filter, independent learnability, Flexi-JEST, the clean-only oracle) at JEST's total compute
(the reference's training and scoring counted), so they also compare with it directly. Every run, 3
seeds. A method's speed-up is the budget uniform needs to match its final retrieval R@1 (read between
ladder runs in log budget, `intervals.budget_to_match`), in iterations, total FLOPs and learner FLOPs,
each with a 95% interval from a bootstrap over seeds and eval queries (`intervals.Bootstrap`).

**Extended (`make bench-extended`, after the main runs).** Each part answers one question and is timed:
the learning-rate sweep behind `LEARNING_RATES`; references of several strengths (does a weak reference
hurt JEST more than the filter?); a long-tail pool (`demo.dataset=fashion-longtail`) where clean pairs
are not all equally useful; the precision of the int8 score cache and bf16 selection on trained
embeddings (precision.py); JEST's `n_chunks` / `filter_ratio` ablation; sub-batch sizes at equal
examples seen; the model integration (`model.arch=hf-siglip` against `vit` at equal FLOPs, and a SigLIP
reference brought in as a model hub's folder against the pipeline's own).

Runs are resumable (a finished run is not redone) and spread over worker processes. Outputs in OUT:
results.json (docs/bench-results.md documents it), bench.md, the plots; `scripts/benchmarks_md.py`
assembles BENCHMARKS.md from them.
"""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from .. import __version__, storage
from .. import config as C
from ..core import flops
from ..methods import METHODS

LADDER = (0.5, 1, 2, 4, 8)  # uniform's complete runs, in multiples of the learner budget
JEST = "jest"
# The methods read against the ladder: every benchmarked method but uniform, in registry order.
CURATED = tuple(name for name, m in METHODS.items() if m.benchmarked and name != "uniform")
# Peak learning rates, from the sweep in `make bench-extended` (`SWEEP_LRS`, BENCHMARKS.md): uniform's and
# JEST's best at the 1x budget; the other methods take the one of their sampler (uniform sampling: the
# filter and the oracle; online selection: independent, Flexi-JEST), since only these two were swept.
LEARNING_RATES = {"uniform": 2.5e-4, JEST: 2.5e-4}
SWEEP_LRS = (1.25e-4, 2.5e-4, 5e-4, 1e-3)
SWEEP_SEEDS = 2
ABLATIONS = (("n_chunks", 1), ("n_chunks", 4), ("filter_ratio", 0.5), ("filter_ratio", 0.9))
REFERENCE_STEPS = (600, 2400)  # besides the preset's: the reference-strength axis
LONGTAIL = ("oracle", "offline-easy-reference", "independent", JEST, "uniform")  # at JEST's total compute
HF_SIGLIP = "model.arch=hf-siglip"
# The brought-in ("bring your own") reference: a SigLIP trained this many times the preset's reference steps
# on the curated set, saved as a model hub's folder (factory.HUB_FILES) and given by path like a downloaded one.
BYO_LONGER = 4
PARTS = ("main", "lr-sweep", "reference-strength", "long-tail", "precision", "ablations", "batch-sizes", "models")


def learning_rate(method: str) -> float:
    if method in LEARNING_RATES:
        return LEARNING_RATES[method]
    return LEARNING_RATES["uniform" if not METHODS[method].online else JEST]


@dataclass(frozen=True)
class Study:
    """A dataset with its reference and score cache; runs go under `runs`."""

    name: str
    data: str
    reference: str
    scores: str
    runs: str
    sets: tuple = ()  # config overrides this study adds (its dataset, its reference's steps)
    trained: str = ""  # a reference brought in: trained here first, then saved as a hub folder at `reference`


@dataclass(frozen=True)
class Job:
    name: str
    method: str
    seed: int
    study: Study
    part: str
    overrides: tuple = field(default=())

    @property
    def folder(self) -> str:
        return storage.join(self.study.runs, self.name)


def _lr(method: str) -> str:
    return f"learner.optim.lr={learning_rate(method)}"


def steps_at(cfg: C.Config, method: str, total: float, index: dict) -> int:
    """Steps of `method` that cost `total` FLOPs, its fixed costs included."""
    return flops.steps_at_total(cfg.with_method(method), total, index)


def jest_total(cfg: C.Config, index: dict) -> float:
    """Total FLOPs of a 1x JEST run on the study whose score cache has `index`."""
    return flops.run_cost(cfg.with_method(JEST), index)


def at_budget(cfg: C.Config, steps: int) -> tuple:
    """Overrides for a run of `steps` (the same number of log-spaced evaluations, checkpoints by size)."""
    return (f"learner.steps={steps}", f"learner.checkpoint_every={max(1, steps // 4)}")


def main_jobs(cfg: C.Config, seeds: int, study: Study, index: dict) -> list[Job]:
    """The ladder, JEST at 1x, and the other curated methods at JEST's total compute."""
    b = cfg.learner.steps
    total = jest_total(cfg, index)
    jobs = []
    for s in range(seeds):
        for k in LADDER:
            knobs = (_lr("uniform"), *at_budget(cfg, round(k * b)))
            jobs.append(Job(f"uniform-x{k:g}-s{s}", "uniform", s, study, "main", knobs))
        jobs.append(Job(f"{JEST}-s{s}", JEST, s, study, "main", (_lr(JEST),)))
        for m in CURATED:
            if m != JEST:
                steps = steps_at(cfg, m, total, index)
                jobs.append(Job(f"{m}-s{s}", m, s, study, "main", (_lr(m), *at_budget(cfg, steps))))
    return jobs


def sweep_jobs(cfg: C.Config, study: Study) -> list[Job]:
    """Uniform and JEST at 1x with each `SWEEP_LRS` value but the one the main runs use (those join in)."""
    return [
        Job(f"{m}-lr{lr:g}-s{s}", m, s, study, "lr-sweep", (f"learner.optim.lr={lr}",))
        for m in ("uniform", JEST)
        for lr in SWEEP_LRS
        if lr != learning_rate(m)
        for s in range(SWEEP_SEEDS)
    ]


def ablation_jobs(study: Study) -> list[Job]:
    return [Job(f"jest-{k}{v}-s0", JEST, 0, study, "ablations", (_lr(JEST), f"select.{k}={v}")) for k, v in ABLATIONS]


# The batch-size ablation's methods: one of each way to curate with the reference (joint selection,
# per-example selection, the offline filter: JEST first), at one image resolution (no Flexi-JEST).
BATCH_METHODS = tuple(
    reversed([name for name in CURATED if METHODS[name].uses_reference and not METHODS[name].low_res_scoring])
)


def batch_jobs(cfg: C.Config, study: Study, batch_sizes) -> list[Job]:
    """Each of BATCH_METHODS at sub-batch `b` with as many examples seen as cfg's learner (warmup too), seed 0."""
    t, jobs = cfg.learner, []
    for b in batch_sizes:  # at the preset's b too: the main runs of all but JEST are at JEST's compute, not 1x
        steps = max(1, round(t.steps * t.batch_size / b))
        warmup = max(1, round(t.optim.warmup_steps * t.batch_size / b))
        for m in BATCH_METHODS:
            if m == JEST and b == t.batch_size:
                continue  # the main run jest-s0
            knobs = (_lr(m), f"learner.batch_size={b}", *at_budget(cfg, steps), f"learner.optim.warmup_steps={warmup}")
            jobs.append(Job(f"{m}-b{b}-s0", m, 0, study, "batch-sizes", knobs))
    return jobs


def reference_jobs(cfg: C.Config, seeds: int, study: Study, index: dict) -> list[Job]:
    """JEST at 1x and the filter at JEST's total compute, with one reference (study)."""
    total = jest_total(cfg, index)
    filt = "offline-easy-reference"
    steps = steps_at(cfg, filt, total, index)
    return [
        j
        for s in range(seeds)
        for j in (
            Job(f"{JEST}-s{s}", JEST, s, study, "reference-strength", (_lr(JEST),)),
            Job(f"{filt}-s{s}", filt, s, study, "reference-strength", (_lr(filt), *at_budget(cfg, steps))),
        )
    ]


def longtail_jobs(cfg: C.Config, seeds: int, study: Study, index: dict) -> list[Job]:
    """JEST at 1x and oracle, filter, independent and uniform at its total compute, on the long-tail pool."""
    total = jest_total(cfg, index)
    jobs = []
    for s in range(seeds):
        for m in LONGTAIL:
            extra = () if m == JEST else at_budget(cfg, steps_at(cfg, m, total, index))
            jobs.append(Job(f"{m}-s{s}", m, s, study, "long-tail", (_lr(m), *extra)))
    return jobs


def model_jobs(cfg: C.Config, seeds: int, st: dict, ix: dict) -> list[Job]:
    """Per architecture, JEST at 1x and uniform at JEST's total compute (vit's JEST runs are the main part's);
    JEST at 1x with the brought-in reference."""
    jobs = []
    for name in ("main", "hf-siglip"):
        scfg = C.override(cfg, list(st[name].sets))
        knobs = (_lr("uniform"), *at_budget(scfg, steps_at(scfg, "uniform", jest_total(scfg, ix[name]), ix[name])))
        for s in range(seeds):
            jobs.append(Job(f"uniform-eqflops-s{s}", "uniform", s, st[name], "models", knobs))
            if name != "main":
                jobs.append(Job(f"{JEST}-s{s}", JEST, s, st[name], "models", (_lr(JEST),)))
    return [*jobs, *(Job(f"{JEST}-s{s}", JEST, s, st["byo-reference"], "models", (_lr(JEST),)) for s in range(seeds))]


def _cost(cfg: C.Config, job: Job) -> float:
    c = C.override(cfg.with_method(job.method), [*job.study.sets, *job.overrides])
    return c.learner.steps * flops.step_cost(c).total


def _run_job(job: Job, preset: str, overrides: list, threads: int) -> str:
    """One learner in a worker process (its own torch threads); returns the run folder."""
    import torch

    from .. import stages

    torch.set_num_threads(threads)
    if storage.exists(storage.join(job.folder, "train.json")):
        return job.folder
    sets = [*overrides, *job.study.sets, f"select.method={job.method}", f"learner.seed={job.seed}"]
    cfg = C.load_config(preset, None, [*sets, f"learner.threads={threads}", *job.overrides])
    pool, ev = storage.join(job.study.data, "pool"), storage.join(job.study.data, "eval")
    stages.train_learner(cfg, pool, job.folder, job.study.scores, ev, progress=False)
    return job.folder


def prepare(study: Study, cfg: C.Config) -> dict:
    """The study's demo data, reference and score cache (each made once); returns the cache's index."""
    from .. import stages
    from ..data.demo import demo_complete, make_demo

    if not demo_complete(study.data):
        print(f"[bench] {study.name}: writing the demo data ({cfg.demo.dataset})", flush=True)
        make_demo(study.data, cfg.demo)
    trained = study.trained or study.reference
    if not storage.exists(storage.join(trained, "train.json")):
        print(f"[bench] {study.name}: training the reference ({cfg.reference.steps} steps)", flush=True)
        stages.train_reference(cfg, storage.join(study.data, "curated"), trained, progress=False)
    if study.trained and not storage.exists(storage.join(study.reference, "model.safetensors")):
        from ..model.factory import HUB_FILES

        for name in HUB_FILES:  # weights last: the folder is complete once they are there
            with storage.open_read(storage.join(trained, name)) as f:
                storage.write_bytes(storage.join(study.reference, name), f.read())
    index_uri = storage.join(study.scores, "index.json")
    # Scored every time: `score` reuses each score file made from the same shard bytes and reference by this
    # jestflow (a fingerprint pass, no decoding) and redoes the rest, so a cache an older jestflow made
    # (another fingerprint, no CLIP scores) is brought up to date instead of failing the runs that read it.
    print(f"[bench] {study.name}: scoring the pool (score files still current are reused)", flush=True)
    stages.score(cfg, study.reference, storage.join(study.data, "pool"), study.scores, progress=False)
    return storage.read_json(index_uri)


def run_jobs(jobs: list[Job], cfg: C.Config, preset: str, overrides: list, workers: int, label: str) -> dict:
    """Train the jobs not yet done, the costliest first so the workers stay busy. Returns what this call
    took: wall and CPU seconds (the workers'), how many runs it trained and of how many (fewer when an
    interrupted invocation left finished runs, which are reused and not timed again)."""
    import resource

    t0 = time.time()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    todo = sorted(
        (j for j in jobs if not storage.exists(storage.join(j.folder, "train.json"))), key=lambda j: -_cost(cfg, j)
    )
    threads = max(1, (os.cpu_count() or 2) // workers)
    print(f"[bench] {label}: {len(todo)} of {len(jobs)} runs to train on {workers} workers x {threads} threads")
    with ProcessPoolExecutor(workers) as pool:
        futs = {pool.submit(_run_job, j, preset, overrides, threads): j for j in todo}
        for n, f in enumerate(as_completed(futs), 1):
            f.result()
            print(f"[bench] {label}: {n}/{len(todo)} {futs[f].name} ({time.time() - t0:.0f} s)", flush=True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, reaped when the pool closed
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {"seconds": time.time() - t0, "cpu_seconds": cpu, "runs": len(todo), "of": len(jobs)} if todo else {}


def studies(out: str, cfg: C.Config, reference_steps=REFERENCE_STEPS) -> dict[str, Study]:
    """Where each study keeps its data, reference, scores and runs (under OUT)."""
    main = Study("main", storage.join(out, "data"), storage.join(out, "reference"), storage.join(out, "scores"),
                 storage.join(out, "runs"))  # fmt: skip
    out_studies = {"main": main}
    for steps in reference_steps:
        name = f"reference-{steps}"
        out_studies[name] = Study(name, main.data, storage.join(out, name), storage.join(out, f"scores-{name}"),
                                  storage.join(out, f"runs-{name}"), (f"reference.steps={steps}",))  # fmt: skip
    lt = storage.join(out, "longtail")
    out_studies["long-tail"] = Study("long-tail", storage.join(lt, "data"), storage.join(lt, "reference"),
                                     storage.join(lt, "scores"), storage.join(lt, "runs"),
                                     ("demo.dataset=fashion-longtail",))  # fmt: skip
    hf = storage.join(out, "hf-siglip")
    out_studies["hf-siglip"] = Study("hf-siglip", main.data, storage.join(hf, "reference"), storage.join(hf, "scores"),
                                     storage.join(hf, "runs"), (HF_SIGLIP,))  # fmt: skip
    byo = storage.join(out, "byo-reference")
    out_studies["byo-reference"] = Study("byo-reference", main.data, storage.join(byo, "model"),
                                         storage.join(byo, "scores"), storage.join(byo, "runs"),
                                         (HF_SIGLIP, f"reference.steps={BYO_LONGER * cfg.reference.steps}"),
                                         trained=storage.join(byo, "trained"))  # fmt: skip
    return out_studies


def plan(
    cfg: C.Config, seeds: int, out: str, extended: bool, batch_sizes=(), indexes=None, reference_steps=REFERENCE_STEPS
) -> dict:
    """Part -> its jobs. `indexes`: each study's score-cache index (the fixed costs matched runs count)."""
    st = studies(out, cfg, reference_steps)
    ix = indexes or {}
    parts = {"main": main_jobs(cfg, seeds, st["main"], ix["main"])}
    if extended:
        parts["lr-sweep"] = sweep_jobs(cfg, st["main"])
        parts["reference-strength"] = [
            j
            for steps in reference_steps
            for j in reference_jobs(cfg, seeds, st[f"reference-{steps}"], ix[f"reference-{steps}"])  # fmt: skip
        ]
        parts["long-tail"] = longtail_jobs(cfg, seeds, st["long-tail"], ix["long-tail"])
        parts["ablations"] = ablation_jobs(st["main"])
        parts["batch-sizes"] = batch_jobs(cfg, st["main"], batch_sizes)
        # the models part came later: a bench folder extended before it (no SigLIP studies scored) has none
        parts["models"] = model_jobs(cfg, seeds, st, ix) if {"hf-siglip", "byo-reference"} <= set(ix) else []
    return parts


def bench_curation(
    preset: str,
    overrides: list,
    out: str,
    seeds: int = 3,
    workers: int = 2,
    extended: bool = False,
    command: str = "",
    config_file: str | None = None,
    batch_sizes: tuple[int, ...] = (32, 128, 512),
    reference_steps: tuple[int, ...] = REFERENCE_STEPS,
    precision_sizes: tuple[int, ...] | None = None,
) -> dict:
    """The main part, then (`extended`) the other parts one after another, each timed. `reference_steps`
    and `precision_sizes` size the reference-strength and precision parts (tests make them small)."""
    from . import precision

    overrides = [*(C.file_overrides(config_file) if config_file else []), *overrides]
    cfg = C.load_config(preset, None, overrides)
    st = studies(out, cfg, reference_steps)
    earlier = storage.join(out, "results.json")
    previous = storage.read_json(earlier) if storage.exists(earlier) else {}
    timing = dict(previous.get("timing", {}))
    t0 = time.time()
    indexes = {"main": prepare(st["main"], cfg)}
    parts = plan(cfg, seeds, out, False, indexes=indexes, reference_steps=reference_steps)
    took = run_jobs(parts["main"], cfg, preset, overrides, workers, "main")
    if took:
        timing["main"] = {**took, "seconds": time.time() - t0, "command": command}
    if extended:
        for name, study in st.items():
            if name != "main":
                tp = time.time()
                scfg = C.override(cfg, list(study.sets))
                indexes[name] = prepare(study, scfg)
                timing.setdefault(f"prepare:{name}", {"seconds": time.time() - tp})
        parts = plan(cfg, seeds, out, True, batch_sizes, indexes, reference_steps)
        for part, jobs in parts.items():
            if part == "main":
                continue
            scfg = C.override(cfg, list(jobs[0].study.sets)) if jobs else cfg
            took = run_jobs(jobs, scfg, preset, overrides, workers, part)
            if took:
                timing[part] = took
        if not storage.exists(storage.join(out, "precision.json")):
            tp = time.time()
            sizes = precision_sizes or precision.SIZES
            storage.write_json(storage.join(out, "precision.json"), precision.study(cfg, st["main"], sizes))
            timing["precision"] = {"seconds": time.time() - tp}
    extended = extended or bool(previous.get("extended"))
    results = finish(out, cfg, preset, overrides, seeds, command, extended, batch_sizes, timing, reference_steps)
    return publish(results, out)


def finish(out, cfg, preset, overrides, seeds, command, extended, batch_sizes, timing, reference_steps) -> dict:
    """Analyse every finished run (analysis.py) into results.json's content."""
    from . import analysis

    st = studies(out, cfg, reference_steps)
    indexes = {n: storage.read_json(storage.join(s.scores, "index.json")) for n, s in st.items()
               if storage.exists(storage.join(s.scores, "index.json"))}  # fmt: skip
    parts = plan(cfg, seeds, out, extended, batch_sizes, indexes, reference_steps)
    runs = {part: _finished(jobs, prefixed=part in ("reference-strength", "models")) for part, jobs in parts.items()}
    return {
        "preset": preset,
        "overrides": overrides,
        "seeds": seeds,
        "ladder": list(LADDER),
        "learning_rates": {m: learning_rate(m) for m in ("uniform", *CURATED)},
        "version": __version__,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
        "extended": extended,
        "timing": timing,
        "batch_sizes": list(batch_sizes),
        "reference_steps": list(reference_steps),
        "config": C.to_dict(cfg),
        **analysis.analyse(cfg, runs, seeds, st, indexes, out),
    }


def _finished(jobs: list[Job], prefixed: bool = False) -> dict[str, dict]:
    """Run name -> train.json of the finished jobs (`prefixed`: "study/name", for a part over several studies)."""
    return {
        (f"{j.study.name}/{j.name}" if prefixed else j.name): storage.read_json(storage.join(j.folder, "train.json"))
        for j in jobs
        if storage.exists(storage.join(j.folder, "train.json"))
    }


def publish(results: dict, out: str) -> dict:
    """results.json, the plots and bench.md in OUT (scripts/benchmarks_md.py turns them into BENCHMARKS.md)."""
    from .curation_report import plots, render

    storage.write_json(storage.join(out, "results.json"), results)
    plots(results, out)
    md = render(results)
    storage.write_bytes(storage.join(out, "bench.md"), md.encode())
    print(md)
    return results


def rerender(out: str) -> dict:
    """Recompute results, tables and plots from the finished runs in OUT (no training), keeping the
    measured times, command and date."""
    old = storage.read_json(storage.join(out, "results.json"))
    cfg = C.from_dict(old["config"])
    new = finish(out, cfg, old["preset"], old["overrides"], old["seeds"], old["command"], old["extended"],
                 tuple(old["batch_sizes"]), old["timing"], tuple(old["reference_steps"]))  # fmt: skip
    new.update({k: old[k] for k in ("date", "machine") if k in old})
    return publish(new, out)


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
