"""The curation benchmark: its plan (the ladder, matched compute, learning rates), the interval and
ladder arithmetic on exact cases, and the whole benchmark with every extended part at toy size (report,
plots, BENCHMARKS.md assembly, resuming)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jestflow.bench.curation import (
    CURATED,
    LADDER,
    LEARNING_RATES,
    SWEEP_LRS,
    _run_job,
    bench_curation,
    learning_rate,
    plan,
    studies,
)
from jestflow.bench.curation_report import PLOTS, ratio, targets
from jestflow.bench.intervals import Bootstrap, Hits, budget_to_match, interval, score_at, verdict
from jestflow.config import load_config
from jestflow.core import flops

ROOT = Path(__file__).resolve().parents[2]
TOY = [
    "reference.steps=30",
    "learner.steps=12",
    "learner.eval_every=4",
    "demo.n_pool=800",
    "demo.n_curated=200",
    "demo.n_eval=100",
    "demo.shard_size=200",
]
INDEX = {"reference_flops": 3e11, "scoring_flops": 2e11}


# ---- the arithmetic -------------------------------------------------------------------------------


def test_budget_to_match_reads_between_complete_runs_in_log_budget():
    budgets, scores = [0.5, 1, 2, 4, 8], [0.02, 0.04, 0.06, 0.07, 0.08]
    assert budget_to_match(budgets, scores, 0.04) == pytest.approx(1.0)
    assert budget_to_match(budgets, scores, 0.05) == pytest.approx(math.sqrt(2))  # halfway in log budget
    assert budget_to_match(budgets, scores, 0.09) == math.inf  # beyond the longest run: known only as "> 8x"
    assert budget_to_match(budgets, scores, 0.01) == -math.inf  # the shortest run already reaches it
    # a noisy ladder: the first rung that reaches the score counts
    assert budget_to_match([1, 2, 4], [0.05, 0.04, 0.06], 0.055) == pytest.approx(2 * 2**0.75)
    assert score_at(budgets, scores, 2 * 2**0.5) == pytest.approx(0.065)
    assert math.isnan(score_at(budgets, scores, 16))


def test_bootstrap_is_paired_and_its_spread_is_the_binomial_one():
    rng = np.random.default_rng(0)
    n = 2000
    bs = Bootstrap(n, 3, replicates=400)
    perfect = Hits(np.ones(n, bool), np.ones(n, bool))
    assert np.all(bs.r1(perfect) == 1.0)
    p = 0.06
    h = Hits(rng.random(n) < p, rng.random(n) < p)
    se = bs.query_se(h)
    expect = math.sqrt(p * (1 - p) / n / 2)  # two independent directions averaged
    assert 0.8 * expect < se < 1.2 * expect
    # the same query draw for every run: a copy's difference is exactly 0 in every replicate
    assert np.all(bs.r1(h) - bs.r1(Hits(h.i2t.copy(), h.t2i.copy())) == 0)
    # seed means resample seeds, the same draw for every method
    a, b = [np.full(400, v) for v in (0.1, 0.2, 0.3)], [np.full(400, v) for v in (0.1, 0.2, 0.3)]
    assert np.all(bs.seed_mean(a) == bs.seed_mean(b))


def test_verdicts_and_open_ended_ratios():
    assert verdict(interval(0.02, np.array([0.01, 0.03]))) == "beats"
    assert verdict(interval(0.0, np.array([-0.01, 0.01]))) == "ties"
    assert verdict(interval(-0.02, np.array([-0.03, -0.01]))) == "loses to"
    iv = {**interval(3.0, np.array([2.0, 4.0, math.inf])), "top": 8.0, "bottom": 0.5}
    assert ratio(iv) == "3.00× [2.00×, > 8.00×]"


# ---- the plan -------------------------------------------------------------------------------------


def test_plan_puts_uniform_on_a_ladder_and_the_others_at_jest_compute(tmp_path):
    cfg = load_config("bench")
    jobs = plan(cfg, 3, str(tmp_path), False, indexes={"main": INDEX})["main"]
    by = {j.name: j for j in jobs}
    assert len(jobs) == 3 * (len(LADDER) + len(CURATED))
    for k in LADDER:  # complete runs at k x the budget, each with its own schedule
        assert f"learner.steps={round(k * cfg.learner.steps)}" in by[f"uniform-x{k:g}-s2"].overrides
    jest_total = flops.run_cost(cfg.with_method("jest"), INDEX)
    for m in CURATED:
        j = by[f"{m}-s0"]
        c = load_config("bench", None, [f"select.method={m}", *j.overrides])
        assert f"learner.optim.lr={learning_rate(m)}" in j.overrides
        if m != "jest":  # at JEST's total compute, the reference's fixed cost counted where it is charged
            step = flops.step_cost(c).total
            assert jest_total - step < flops.run_cost(c, INDEX) <= jest_total + step, m
    assert learning_rate("offline-easy-reference") == LEARNING_RATES["uniform"]
    assert learning_rate("flexi-jest") == LEARNING_RATES["jest"]


def test_extended_plan_has_every_part(tmp_path):
    cfg = load_config("bench")
    ix = {name: INDEX for name in studies(str(tmp_path), cfg)}
    parts = plan(cfg, 3, str(tmp_path), True, (32, 128), ix)
    assert set(parts) == {"main", "lr-sweep", "reference-strength", "long-tail", "ablations", "batch-sizes", "models"}
    assert len(parts["lr-sweep"]) == 2 * (len(SWEEP_LRS) - 1) * 2  # 2 methods, the main runs' rate joins
    assert {j.study.name for j in parts["reference-strength"]} == {"reference-600", "reference-2400"}
    assert all("demo.dataset=fashion-longtail" in j.study.sets for j in parts["long-tail"])
    b = next(j for j in parts["batch-sizes"] if j.name == "jest-b128-s0")
    assert "learner.steps=250" in b.overrides  # equal examples seen: 1000 x 32 = 250 x 128
    models = {(j.study.name, j.name): j for j in parts["models"]}
    assert set(models) == {
        (st, f"{m}-s{s}")
        for s in range(3)
        for st, m in (
            ("main", "uniform-eqflops"),
            ("hf-siglip", "jest"),
            ("hf-siglip", "uniform-eqflops"),
            ("byo-reference", "jest"),
        )
    }
    hf = models[("hf-siglip", "uniform-eqflops-s0")]
    assert "model.arch=hf-siglip" in hf.study.sets and hf.study.reference != hf.study.trained == ""
    byo = models[("byo-reference", "jest-s0")].study
    assert "reference.steps=600" in byo.sets and byo.trained  # 4x the preset's 150, trained, then given as a folder


# ---- the whole benchmark at toy size ------------------------------------------------------------


@pytest.mark.slow
def test_bench_curation_toy_with_every_part(tmp_path):
    out = tmp_path / "bench"
    res = bench_curation("smoke", TOY, str(out), seeds=2, workers=2, extended=True, command="test",
                         batch_sizes=(32, 64), reference_steps=(40,), precision_sizes=(8,))  # fmt: skip
    main = res["main"]
    assert list(main["ladder"]) == [f"{k:g}" for k in LADDER]
    assert set(main["methods"]) == set(CURATED)
    j = main["methods"]["jest"]
    for key in ("iteration_speedup", "total_flops_speedup", "learner_flops_speedup", "retrieval_r1"):
        assert j[key]["low"] <= j[key]["value"] <= j[key]["high"] or not math.isfinite(j[key]["value"]), key
    assert main["methods"]["oracle"]["clean_fraction"] == 1.0
    assert set(main["equal_compute"]) >= {"uniform", "offline-easy-reference", "oracle"}
    assert set(res["lr_sweep"]) == {"uniform", "jest"} and len(res["lr_sweep"]["jest"]["rows"]) == len(SWEEP_LRS)
    assert set(res["reference_strength"]) == {"30", "40"}
    assert set(res["long_tail"]["methods"]) >= {"jest", "offline-easy-reference"}
    assert 0 < res["long_tail"]["methods"]["jest"]["head_share"] < 1
    assert res["precision"]["sizes"]["8"]["int8 cache"]["changed_mean"] >= 0
    assert {r["batch_size"] for r in res["batch_ablation"]} == {32, 64}
    assert set(res["timing"]) >= {"main", "lr-sweep", "long-tail", "precision", "models"}
    assert set(res["models"]["archs"]) == {"vit", "hf-siglip"} and "gain_hf_minus_vit" in res["models"]
    b = res["models"]["byo_reference"]
    assert b["steps"] == 120 and b["own_steps"] == 30 and 0 <= b["reference_r1"] <= 1
    brought = out / "byo-reference" / "model"  # a model hub's folder: scored as pretrained, no cost charged
    assert {p.name for p in brought.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                   "tokenizer_config.json"}  # fmt: skip
    index = json.loads((out / "byo-reference" / "scores" / "index.json").read_text())
    assert index["reference_pretrained"] is True and index["reference_flops"] == 0
    names = [t[0] for t in targets(res)]
    assert names[0] == "Uniform's 1× retrieval R@1 ≥ 10× chance in every seed"
    assert any(n.startswith("The benchmark runs each swept method at the sweep's best") for n in names)
    assert "best_minus_used" in res["lr_sweep"]["jest"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == 2 and saved["reference_steps"] == [40]

    # scripts/benchmarks_md.py: the repository's report, plots beside it, findings and GPU section kept
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bench-findings.md").write_text("Toy findings paragraph.")
    (tmp_path / "docs" / "bench-gpu.md").write_text("## GPU section kept")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmarks_md.py"), str(out),
                        str(tmp_path / "BENCHMARKS.md")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for name in PLOTS:
        assert f"(docs/bench/{name})" in md and (tmp_path / "docs" / "bench" / name).exists(), name
    assert "Toy findings paragraph." in md and "| target | met | measured |" in md
    assert md.rstrip().endswith("## GPU section kept")
    assert "## `make bench-extended`" in md and "### Learning-rate sweep" in md
    assert "### Standard models: `hf-siglip` against `vit`" in md and "| brought in (120 steps) |" in md

    # resumable: a finished run is returned as it is, not trained again; rendering again changes nothing
    cfg = load_config("smoke", None, TOY)
    index = json.loads((out / "scores" / "index.json").read_text())
    job = next(j for j in plan(cfg, 2, str(out), False, indexes={"main": index})["main"] if j.name == "jest-s0")
    summary = out / "runs" / "jest-s0" / "train.json"
    mtime = summary.stat().st_mtime_ns
    assert _run_job(job, "smoke", TOY, 1) == str(summary.parent)
    assert summary.stat().st_mtime_ns == mtime
    from jestflow.bench.curation import rerender

    before = (out / "bench.md").read_text()
    rerender(str(out))
    assert (out / "bench.md").read_text() == before


def test_payoff_is_decided_by_the_intervals_not_the_point_estimate():
    """A learner-only speed-up of 1.01× [0.52×, 1.59×] once read "pays for itself once 21 runs share it"."""
    from jestflow.bench.curation_report import payoff_verdict

    def e(total, learner, runs=21):
        iv = lambda v, lo, hi: {"value": v, "low": lo, "high": hi, "top": 8, "bottom": 0.5}  # noqa: E731
        p = {"break_even_runs": runs, "fixed_flops": 1.0, "method_flops": 10.0}
        return {"total_flops_speedup": iv(*total), "learner_flops_speedup": iv(*learner), "payoff": p}

    assert "may or may not" in payoff_verdict(e((0.85, 0.44, 1.34), (1.01, 0.52, 1.59)))
    assert "within a single run" in payoff_verdict(e((2.2, 1.7, 2.5), (2.6, 2.1, 3.0), 1))
    assert "never pays" in payoff_verdict(e((0.5, 0.3, 0.7), (0.6, 0.4, 0.9), None))
    slow = payoff_verdict(e((0.9, 0.7, 1.1), (1.2, 1.05, 1.4), 1))
    assert "at the point estimate" in slow and "2 at the interval's low end" in slow
