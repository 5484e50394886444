"""How a run's report reads speed-ups off learning curves: the baseline credited with the step its own
curve first reached a target, and no ratio for a metric the baseline left near chance."""

from jestflow.reporting.run_report import compare_targets, write_report


def _run(points, steps=1000, final=None, **extra_final):
    curve = [{"step": s, "flops": s * 1e9, "retrieval_r1": v} for s, v in points]
    summary = {"steps": steps, "flops_total": steps * 1e9, "curve": curve, "method": "x", "clean_fraction": 0.5,
               "wall_seconds": 1.0}  # fmt: skip
    return {"summary": summary, "final": {"retrieval_r1": final or points[-1][1], **extra_final}}


def test_a_fractional_target_credits_the_baseline_with_its_own_first_reach():
    """Was: the 25% target credited uniform with 250 steps although its noisy curve first reached that
    value at step 13 (a 13x 'speed-up' that was really 0.7x)."""
    uniform = _run([(1, 0.001), (13, 0.0030), (100, 0.0010), (250, 0.0025), (1000, 0.010)])
    method = _run([(1, 0.001), (10, 0.002), (20, 0.0025), (1000, 0.1)])
    c = compare_targets({"uniform": uniform, "jest": method}, fractions=(0.25,))[0.25]
    assert c["uniform"]["target"] == 0.0025
    assert c["uniform"]["iterations_to_target"] == 1 + (13 - 1) * (0.0025 - 0.001) / (0.0030 - 0.001)  # 10.0
    assert c["jest"]["iteration_speedup"] == 10.0 / 20


def test_no_ratio_for_a_metric_at_chance(tmp_path):
    """Zero-shot at chance (uniform 0.101 on 10 classes) gets no speed-up; retrieval far above chance does."""
    fin = {"zeroshot_top1": 0.101, "zeroshot_chance": 0.1, "retrieval_chance": 0.001, "i2t_r1": 0, "t2i_r1": 0,
           "i2t_r5": 0, "t2i_r5": 0}  # fmt: skip
    runs = {"uniform": _run([(1, 0.01), (1000, 0.05)], **fin), "jest": _run([(1, 0.02), (500, 0.06)], **fin)}
    results = write_report(runs, str(tmp_path))
    assert results["at_chance"] == ["zeroshot_top1"] and results["speedup_zeroshot_top1"] == {}
    assert results["speedup_retrieval_r1"]["jest"]["iteration_speedup"] > 1
    assert "under 2x chance: no speed-up is given" in (tmp_path / "report.md").read_text()
