"""Measurement that cannot saturate (log-spaced evaluations, lower bounds, several targets) and the
payoff analysis (when the reference's fixed cost pays for itself)."""

import pytest

from jestflow import config as C
from jestflow.core.flops import break_even_words, payoff, payoff_curve
from jestflow.reporting.run_report import compare, compare_targets, speedup_text


def run(steps, curve, flops_per_step=10.0, fixed=0.0):
    summary = {
        "steps": steps,
        "flops_total": steps * flops_per_step,
        "curve": [{"step": s, "flops": s * flops_per_step, "retrieval_r1": y} for s, y in curve],
    }
    if fixed:
        summary.update(reference_flops=fixed, reference_scoring_flops=0.0)
    return {"summary": summary, "final": {"retrieval_r1": curve[-1][1]}}


def test_log_schedule_is_dense_early_and_ends_at_the_last_step():
    t = C.load_config(
        "smoke", None, ["learner.eval_schedule=log", "learner.eval_points=8", "learner.steps=1000"]
    ).learner
    assert sorted(t.eval_steps()) == [1, 3, 7, 19, 52, 139, 373, 1000]
    linear = C.load_config("smoke").learner
    assert sorted(linear.eval_steps()) == [20, 40, 60]
    assert C.load_config("smoke", None, ["learner.eval_every=0"]).learner.eval_steps() == set()


def test_a_target_beaten_at_the_first_evaluation_is_a_lower_bound():
    runs = {
        "uniform": run(100, [(10, 0.1), (50, 0.2), (100, 0.3)]),
        "fast": run(100, [(10, 0.35), (50, 0.4), (100, 0.5)], fixed=500.0),
        "slow": run(100, [(10, 0.1), (50, 0.25), (100, 0.35)]),
    }
    c = compare(runs)
    assert c["fast"]["lower_bound"] and c["fast"]["iteration_speedup"] == 10.0
    assert speedup_text(c["fast"]) == "≥ 10.00x"
    assert not c["slow"]["lower_bound"] and c["slow"]["iterations_to_target"] == pytest.approx(75.0)
    assert speedup_text(c["slow"]) == "1.33x"
    # total FLOPs include the fixed cost of the run that is charged it
    assert c["fast"]["flops_to_target"] == 100 + 500 and c["fast"]["flops_speedup"] == pytest.approx(1000 / 600)
    assert c["fast"]["learner_flops_speedup"] == 10.0


def test_speedups_at_several_targets_along_the_baseline_curve():
    runs = {
        "uniform": run(100, [(25, 0.1), (50, 0.2), (75, 0.25), (100, 0.3)]),
        "m": run(100, [(5, 0.05), (25, 0.25), (50, 0.3), (100, 0.4)]),
    }
    t = compare_targets(runs)
    assert [round(c["m"]["target"], 3) for c in t.values()] == [0.1, 0.2, 0.25, 0.3]
    assert t[0.5]["m"]["iterations_to_target"] == pytest.approx(5 + 20 * (0.15 / 0.2))
    assert t[1.0]["m"]["iteration_speedup"] == 2.0


def test_payoff_break_even():
    p = payoff(uniform_flops=10.0, method_flops=4.0, fixed_flops=30.0)
    assert p["learner_speedup"] == 2.5 and p["total_speedup"] == pytest.approx(10 / 34)
    assert p["break_even_runs"] == 5 and p["break_even_uniform_flops"] == pytest.approx(50.0)
    curve = payoff_curve(10.0, 4.0, 30.0, [1, 5, 1000])
    assert curve[0] < 1 <= curve[1] and curve[2] == pytest.approx(2.5, rel=0.02)
    never = payoff(uniform_flops=4.0, method_flops=5.0, fixed_flops=30.0)
    assert never["break_even_runs"] is None and never["break_even_uniform_flops"] is None


def test_break_even_in_words():
    """One sentence for the CLI, the run report and BENCHMARKS.md: a reference that pays within the run
    it was trained for is not described as "once 1 learner runs share it"."""
    once = payoff(uniform_flops=10.0, method_flops=2.0, fixed_flops=5.0)
    assert once["break_even_runs"] == 1 and once["total_speedup"] > 1
    assert break_even_words(once["break_even_runs"]) == "pays for itself within a single run"
    assert break_even_words(5) == "pays for itself once 5 learner runs share it"
    assert break_even_words(None) == "never pays for itself"
