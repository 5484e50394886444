"""Metric logic against an in-memory registry; documented metrics and emitted metrics must agree."""

import logging
import re
from pathlib import Path

import pytest

from jestflow.platform.metrics import StageMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented() -> dict:
    rows = re.findall(r"^\| `(jestflow_\w+)` \| (\w+) \| ([\w, -]+) \|", DOC.read_text(), re.M)
    return {name: (kind, {w.strip() for w in where.split(",")}) for name, kind, where in rows}


def step(n, **kw):
    s = {
        "step": n,
        "loss": 2.5 - 0.1 * n,
        "grad_norm": 1.5,
        "lr": 1e-3,
        "step_seconds": 0.5,
        "data_wait_seconds": 0.05,
        "selection_seconds": 0.01,
        "examples": 32,
        "examples_per_second": 64.0,
        "noisy_fraction": 0.25,
        "skipped": 1,
        "flops": 1e9,
        "chosen_diag": 0.8,
        "pool_diag": 0.2,
    }
    return {**s, **kw}


def sample_names(m: StageMetrics) -> set:
    return {s.name for fam in m.registry.collect() for s in fam.samples}


def full_run() -> list:
    """Drive every stage kind through its hooks, as the stages do."""
    ms = []
    t = StageMetrics("learner", "jest", run_id="r1", gateway="")
    t.on_start("learner", "jest")
    for i in range(1, 4):
        t.on_step("learner", "jest", step(i))
    t.on_eval(
        "learner",
        "jest",
        {"retrieval_r1": 0.3, "zeroshot_top1": 0.2, "i2t_r1": 0.3, "t2i_r1": 0.3, "i2t_r5": 0.6, "t2i_r5": 0.6},
    )
    t.on_end("learner", "jest", {})
    ms.append(t)
    s = StageMetrics("score", "reference", run_id="r1", gateway="")
    s.start(), s.scored(200, 2), s.scored(150, 3), s.end()
    ms.append(s)
    return ms


def test_training_values():
    t = full_run()[0]
    assert t.value("jestflow_train_step") == 3
    assert t.value("jestflow_train_examples_total") == 96
    assert t.value("jestflow_train_data_wait_seconds_total") == pytest.approx(0.15)
    assert t.value("jestflow_train_flops_total") == 3e9
    assert t.value("jestflow_train_loss") == pytest.approx(2.2)
    assert t.value("jestflow_selection_chosen_learnability") == 0.8
    assert t.value("jestflow_train_noisy_fraction") == 0.25
    assert t.value("jestflow_eval_result", metric="retrieval_r1") == 0.3
    assert t.value("jestflow_stage_running") == 0
    assert t.value("jestflow_stage_duration_seconds") >= 0
    assert t.value("jestflow_push_failures_total") == 0


def test_scoring_values():
    s = full_run()[1]
    assert s.value("jestflow_scored_examples_total") == 350 and s.value("jestflow_skipped_samples_total") == 3


def test_uniform_sets_no_learnability_and_unknown_noise_is_not_reported():
    t = StageMetrics("learner", "uniform", run_id="r", gateway="")
    t.on_step("learner", "uniform", step(1, chosen_diag=float("nan"), pool_diag=float("nan"), noisy_fraction=None))
    assert t.value("jestflow_selection_chosen_learnability") is None
    assert t.value("jestflow_train_noisy_fraction") is None


def test_every_documented_metric_is_emitted_and_every_emitted_one_documented():
    docs = documented()
    assert len(docs) >= 20
    emitted = set()
    for m in full_run():
        emitted |= sample_names(m)
    emitted = {n for n in emitted if not n.endswith("_created")}  # counters also export a creation time
    gpu_only = {n for n, (_, where) in docs.items() if where == {"cuda"}}
    missing = set(docs) - gpu_only - emitted
    assert not missing, f"documented but never set: {missing}"
    assert emitted <= set(docs), f"set but not documented: {emitted - set(docs)}"
    for name, (kind, _) in docs.items():
        assert kind in ("gauge", "counter")
        assert name.endswith("_total") == (kind == "counter"), name  # naming convention


def test_unreachable_gateway_warns_once_and_counts(caplog):
    t = StageMetrics("learner", "jest", run_id="r", gateway="http://127.0.0.1:9", push_interval=0)
    with caplog.at_level(logging.WARNING, logger="jestflow.platform.metrics"):
        t.on_start("learner", "jest")
        for i in range(1, 4):
            t.on_step("learner", "jest", step(i))
        t.on_end("learner", "jest", {})
    warnings = [r for r in caplog.records if "Pushgateway" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0].getMessage()
    assert t.value("jestflow_push_failures_total") == 5  # start, 3 steps, end
    assert t.value("jestflow_train_step") == 3  # the work went on


def test_push_interval_throttles(monkeypatch):
    pushed = []
    monkeypatch.setattr("jestflow.platform.metrics.push_to_gateway", lambda *a, **k: pushed.append(k["grouping_key"]))
    t = StageMetrics("learner", "jest", run_id="r9", gateway="http://gw", push_interval=3600)
    t.on_start("learner", "jest")
    for i in range(1, 6):
        t.on_step("learner", "jest", step(i))
    t.on_end("learner", "jest", {})
    assert len(pushed) == 2  # once at start (forced), steps throttled, once at the end
    assert pushed[0] == {"run_id": "r9", "stage": "learner", "method": "jest"}
