"""The curation benchmark end to end at toy size: every method, aggregation, report, plots; the
BENCHMARKS.md assembly script; resuming reuses finished runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jestflow import config as C
from jestflow.bench.curation import _run_job, bench_curation, plan
from jestflow.bench.curation_report import (
    BENCHMARKED,
    PLOTS,
    REPORTED,
    _wall_words,
    bench_seconds,
    regime_targets,
    targets,
)
from jestflow.config import load_config
from jestflow.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = [
    "reference.steps=30",
    "learner.steps=12",
    "learner.eval_every=4",
    "demo.n_pool=800",
    "demo.n_curated=200",
    "demo.n_eval=100",
]


@pytest.mark.slow
def test_bench_curation_toy(tmp_path):
    out = tmp_path / "bench"
    res = bench_curation("smoke", OVERRIDES, str(out), seeds=1, workers=2, ablations=False, command="test")
    assert set(res["per_method"]) == set(REPORTED)
    flops = res["per_method"]["uniform@flops"]
    assert flops["total_flops"]["mean"] >= 0.98 * res["per_method"]["jest"]["total_flops"]["mean"]
    assert res["per_method"]["uniform"]["iteration_speedup_retrieval_r1"]["mean"] == 1.0
    assert res["per_method"]["oracle"]["clean_fraction"]["mean"] == 1.0
    assert res["per_method"]["jest"]["clean_fraction"]["mean"] > res["per_method"]["uniform"]["clean_fraction"]["mean"]
    assert len(res["chunk_learnability"]["chosen"]) == 4  # smoke: 4 chunks
    assert json.loads((out / "results.json").read_text())["seeds"] == 1
    (inv,) = res["invocations"]
    assert inv["trained"] == len(REPORTED) and inv["batch_size_runs"] == 0 and inv["seconds"] > 0
    names = [t[0] for t in targets(res)]
    assert names[0].startswith("Uniform's final retrieval R@1 is ≥ 5× chance")
    assert names[1].startswith("The learner's budget dominates the reference's")
    assert any(n.startswith("JEST reaches uniform") for n in names)

    # scripts/benchmarks_md.py: the repository's report, plots beside it, findings and GPU section kept
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bench-findings.md").write_text("Toy findings paragraph.")
    (tmp_path / "docs" / "bench-gpu.md").write_text("## GPU section kept")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmarks_md.py"), str(out), str(tmp_path / "BENCHMARKS.md")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for name in PLOTS:
        assert f"(docs/bench/{name})" in md and (tmp_path / "docs" / "bench" / name).exists()
    assert "Toy findings paragraph." in md and "| target | met | measured |" in md
    assert md.rstrip().endswith("## GPU section kept")
    # a second dataset's run as its own section, plots beside it in docs/bench/NAME/
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "benchmarks_md.py"),
            str(out),
            str(tmp_path / "BENCHMARKS.md"),
            "--second",
            f"glyphs={out}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Second dataset (glyphs): does JEST pay off?" in md and "](docs/bench/glyphs/payoff.png)" in md
    assert (tmp_path / "docs" / "bench" / "glyphs" / "payoff.png").exists()
    assert md.count("\n## Targets\n") == 1 and md.count("\n### Targets\n") == 1

    # resumable: a finished run is returned as it is, not trained again
    job = next(j for j in plan(load_config("smoke", None, OVERRIDES), 1, False) if j.name == "jest-s0")
    summary = out / "runs" / "jest-s0" / "train.json"
    mtime = summary.stat().st_mtime_ns
    assert _run_job(job, "smoke", OVERRIDES, str(out / "data"), str(out / "scores"), str(out), 1) == str(summary.parent)
    assert summary.stat().st_mtime_ns == mtime


def test_benchmarked_methods_come_from_the_registry():
    assert BENCHMARKED == tuple(n for n, m in METHODS.items() if m.benchmarked) and BENCHMARKED[0] == "uniform"
    jobs = plan(load_config("smoke"), seeds=2, ablations=False)
    assert sorted(j.name for j in jobs) == sorted(f"{m}-s{s}" for m in BENCHMARKED for s in range(2))


def test_batch_size_ablation_keeps_examples_seen():
    from jestflow.bench.curation import BATCH_METHODS, batch_rows
    from jestflow.bench.curation_report import batch_lines

    cfg = load_config("smoke")  # b = 32, 60 steps, warmup 20
    jobs = {j.name: j for j in plan(cfg, 1, False, batch_sizes=(32, 128))}
    assert {f"{m}-b128-s0" for m in BATCH_METHODS} <= set(jobs) and "jest-b32-s0" not in jobs  # b=32 is the main run
    c = C.override(cfg.with_method("jest"), list(jobs["jest-b128-s0"].overrides))
    assert (c.learner.batch_size, c.learner.steps, c.learner.optim.warmup_steps) == (128, 15, 5)
    assert c.learner.steps * c.learner.batch_size == cfg.learner.steps * cfg.learner.batch_size

    def run(r1):
        return {
            "steps": 1,
            "examples_seen": 1,
            "curve": [{"retrieval_r1": r1}],
            "flops_total": 1.0,
            "clean_fraction": 0.5,
        }

    runs = {
        "jest-s0": run(0.10),
        "independent-s0": run(0.08),
        "jest-b128-s0": run(0.15),
        "independent-b128-s0": run(0.09),
    }
    rows = batch_rows(runs, cfg, (128,))
    assert [(r["method"], r["batch_size"]) for r in rows] == [
        ("jest", 32),
        ("independent", 32),
        ("jest", 128),
        ("independent", 128),
    ]
    text = "\n".join(batch_lines({"batch_ablation": rows}))
    assert "b = 32: +0.020" in text and "b = 128: +0.060" in text


def test_regime_targets_say_whether_the_benchmark_can_answer():
    """Issue 14, point 2: uniform must end well above chance and its learner budget must exceed the
    reference's training plus scoring; both are reported as targets, met or not, from the numbers."""

    def results(r1, learner, reference, scoring):
        return {
            "config": {"demo": {"n_eval": 1000}},
            "per_method": {"uniform": {"retrieval_r1": {"mean": r1}, "learner_flops": {"mean": learner}}},
            "reference": {"flops_total": reference},
            "scoring_flops": scoring,
        }

    chance, dominated = regime_targets(results(0.02, 5.3e12, 1.6e12, 1.1e12))
    assert chance[1] is True and "20.0× chance" in chance[2]
    assert dominated[1] is True and "1.96×" in dominated[2]
    chance, dominated = regime_targets(results(0.004, 2.1e12, 6.3e12, 1.1e12))  # the previous preset's regime
    assert chance[1] is False and dominated[1] is False and "0.28×" in dominated[2]


def test_make_bench_time_leaves_out_the_batch_size_runs():
    """`make bench-extended` adds the batch-size runs to `make bench`'s folder; the 60-minute target is
    read from the invocations that trained no batch-size run, and the Setup line says both times."""
    results = {
        "wall_seconds": 3864.6,
        "invocations": [
            {"command": "make bench", "seconds": 3016.6, "trained": 25, "batch_size_runs": 0},
            {"command": "make bench-extended", "seconds": 848.0, "trained": 6, "batch_size_runs": 6},
        ],
    }
    assert bench_seconds(results) == (3016.6, "on this machine")
    assert _wall_words(results).endswith("(`make bench` 50.3 min, then 6 batch-size runs 14.1 min)")
    both = {"wall_seconds": 4000.0, "invocations": [{"seconds": 4000.0, "trained": 31, "batch_size_runs": 6}]}
    assert bench_seconds(both)[1].endswith("batch-size runs included)")
    assert bench_seconds({"wall_seconds": 100.0}) == (
        100.0,
        "on this machine (all invocations, batch-size runs included)",
    )
