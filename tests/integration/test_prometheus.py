"""End to end: the local pipeline pushes to a real Pushgateway; a real Prometheus scrapes it every
second; every documented metric must arrive for each stage with plausible values, in the stage's
result group (job jestflow_results) once it ended, and no live group (job jestflow) may be left."""

import json
import math
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

# Groups (stage, method) the smoke pipeline pushes, and which "emitted by" classes apply to each.
GROUPS = {
    ("reference", "reference"): {"all", "train", "noise"},
    ("score", "reference"): {"all", "score"},
    ("learner", "jest"): {"all", "train", "select", "noise", "evaluate"},
    ("learner", "uniform"): {"all", "train", "noise", "evaluate"},
    ("learner", "uniform@flops"): {"all", "train", "noise", "evaluate"},
    ("evaluate", "jest"): {"all", "evaluate"},
    ("evaluate", "uniform"): {"all", "evaluate"},
    ("evaluate", "uniform@flops"): {"all", "evaluate"},
}


def documented():
    rows = re.findall(r"^\| `(jestflow_\w+)` \| (\w+) \| ([\w, -]+) \|", DOC.read_text(), re.M)
    return {name: {w.strip() for w in where.split(",")} for name, _, where in rows}


@pytest.fixture(scope="module")
def series(local_pipeline, monitoring):
    """{(name, stage, method): [samples]} once Prometheus has scraped every group's final push."""
    # The report step deletes the run's result groups from the gateway once they are its KFP metrics
    # (after JESTFLOW_RESULTS_GRACE, 3 s here, so the 1 s scrape has them): read each series' last
    # value from Prometheus' history, as a dashboard over finished runs does.
    out = {}
    for r in monitoring.query('{__name__=~"jestflow_.+", job="jestflow_results"}[1h]'):
        m = r["metric"]
        out.setdefault((m["__name__"], m["stage"], m["method"]), []).append((m, float(r["values"][-1][1])))
    return out


def test_one_run_id_for_the_whole_pipeline(series):
    ids = {m["run_id"] for samples in series.values() for m, _ in samples}
    assert len(ids) == 1 and next(iter(ids)) not in ("", "{{$.pipeline_job_uuid}}")


def test_every_documented_metric_arrives_for_each_stage(series):
    missing = []
    for name, where in documented().items():
        for group, classes in GROUPS.items():
            if where & classes and (name, *group) not in series:
                missing.append((name, group))
    assert not missing, missing


def values(series, name, stage, method, **labels):
    return [v for m, v in series[(name, stage, method)] if all(m.get(k) == x for k, x in labels.items())]


def value(series, name, stage, method, **labels):
    samples = values(series, name, stage, method, **labels)
    assert len(samples) == 1, (name, stage, method, labels)
    return samples[0]


def test_values_are_plausible(series):
    for group in GROUPS:  # every series of the group: the scoring fan-out pushes one per branch (label part)
        assert all(v == 0 for v in values(series, "jestflow_stage_running", *group))
        assert all(v > 0 for v in values(series, "jestflow_stage_duration_seconds", *group))
        assert all(v == 0 for v in values(series, "jestflow_push_failures_total", *group))
        assert all(
            abs(v - time.time()) < 3600
            for v in values(series, "jestflow_stage_last_progress_timestamp_seconds", *group)
        )
    parts = {m.get("part") for m, _ in series[("jestflow_scored_examples_total", "score", "reference")]}
    assert parts == {"0", "1", "2", "3"}  # the pipeline's default score_parts
    # smoke preset: reference 150 steps of 64, learners 60 steps of 32, pool 1600
    assert value(series, "jestflow_train_step", "reference", "reference") == 150
    assert value(series, "jestflow_train_examples_total", "reference", "reference") == 150 * 64
    assert value(series, "jestflow_train_examples_total", "learner", "jest") == 60 * 32
    assert sum(values(series, "jestflow_scored_examples_total", "score", "reference")) == 1600
    for group in [g for g in GROUPS if g[0] in ("reference", "learner")]:
        loss = value(series, "jestflow_train_loss", *group)
        assert 0 < loss < 50 and math.isfinite(loss)
        assert value(series, "jestflow_train_examples_per_second", *group) > 0
        assert value(series, "jestflow_train_flops_total", *group) > 0
        assert 0 < value(series, "jestflow_train_learning_rate", *group) < 1
        assert 0 <= value(series, "jestflow_train_noisy_fraction", *group) <= 1
    assert value(series, "jestflow_train_noisy_fraction", "reference", "reference") == 0  # curated is clean
    assert value(series, "jestflow_train_selection_seconds", "learner", "jest") > 0
    assert value(series, "jestflow_train_selection_seconds", "learner", "uniform") == 0
    chosen = value(series, "jestflow_selection_chosen_learnability", "learner", "jest")
    assert chosen > value(series, "jestflow_selection_superbatch_learnability", "learner", "jest")
    for method in ("jest", "uniform", "uniform@flops"):
        for metric in ("zeroshot_top1", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "retrieval_r1"):
            assert 0 <= value(series, "jestflow_eval_result", "evaluate", method, metric=metric) <= 1


def test_pipeline_completes_with_the_gateway_down_and_says_so_once_per_stage(tmp_path, local_pipeline):
    data = local_pipeline[0].parent / "data"  # reuse the smoke data
    from cli import run_jestflow, smoke_args

    sets = ("reference.steps=20", "learner.steps=8", "learner.eval_every=4")
    args = smoke_args("run", *sets, data=data, out=tmp_path / "out", pushgateway="http://127.0.0.1:9")
    r = run_jestflow(*args, env={**os.environ, "JESTFLOW_PUSH_INTERVAL": "0"})
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert (tmp_path / "out" / "results.json").exists()
    warnings = [ln for ln in log.splitlines() if "metrics push to Pushgateway" in ln]
    # one warning from each pushing task (reference, 4 scoring branches, 3 learners, 3 evaluations), not per push
    per_stage = {
        st: sum(f"the {st} stage goes on" in w for w in warnings)
        for st in ("reference", "score", "learner", "evaluate")
    }
    assert per_stage == {"reference": 1, "score": 4, "learner": 3, "evaluate": 3}, "\n".join(warnings) or log[-4000:]


def groups(gateway: str) -> list[dict]:
    """The Pushgateway's groups, from its own API (GET /api/v1/metrics)."""
    with urllib.request.urlopen(f"{gateway}/api/v1/metrics", timeout=5) as r:
        return [g["labels"] for g in json.load(r)["data"]]


def test_no_group_outlives_its_run(series, monitoring):
    """Issue 15 defect 9: groups were never deleted, so a finished (or killed) stage kept
    `jestflow_stage_running` in the gateway forever. Issue 25: result groups then piled up, ~11 per run,
    forever. Every stage of the finished pipeline reached Prometheus as a finished result group
    (`jestflow_stage_running` 0), and the gateway keeps no group of the run, live or result."""
    done = {k[1:] for k, v in series.items() if k[0] == "jestflow_stage_running" and v[0][1] == 0}
    assert set(GROUPS) <= done
    runs = {m["run_id"] for samples in series.values() for m, _ in samples}
    assert len(runs) == 1
    assert [g for g in groups(monitoring.gateway) if g.get("run_id") in runs] == []


def test_result_groups_are_deleted_only_after_their_grace(monitoring):
    """Deleting a group Prometheus has not scraped yet would lose the run's final values: the report
    step waits until the run's last push is `grace` seconds old (three 15 s scrapes by default)."""
    from jestflow.platform.metrics import StageMetrics, delete_run_results

    m = StageMetrics("evaluate", "jest", run_id="grace-1", gateway=monitoring.gateway, push_interval=0)
    m.start()
    m.end()
    pushed = _push_time(monitoring.gateway, job="jestflow_results", run_id="grace-1")
    assert delete_run_results(monitoring.gateway, "other-run", grace=2.0) == 0  # another run's: untouched
    assert _push_time(monitoring.gateway, job="jestflow_results", run_id="grace-1") == pushed
    assert delete_run_results(monitoring.gateway, "grace-1", grace=2.0) == 1
    assert time.time() - pushed >= 2.0
    assert _push_time(monitoring.gateway, job="jestflow_results", run_id="grace-1") is None
    assert delete_run_results("http://127.0.0.1:9", "grace-1", grace=2.0) == 0  # unreachable: logged, skipped


def _push_time(gateway: str, **labels) -> float | None:
    with urllib.request.urlopen(f"{gateway}/api/v1/metrics", timeout=5) as r:
        for g in json.load(r)["data"]:
            if all(g["labels"].get(k) == v for k, v in labels.items()):
                return float(g["push_time_seconds"]["metrics"][0]["value"])
    return None


def test_heartbeat_keeps_a_hung_stage_visible_and_end_cleans_up(monitoring):
    """A stage whose step hangs still pushes (so JestflowTrainingStalled, not JestflowStageLost, fires);
    its end leaves the result group and deletes the live one. Against the real Pushgateway."""
    from jestflow.platform.metrics import StageMetrics

    m = StageMetrics("learner", "jest", run_id="heartbeat-1", gateway=monitoring.gateway, push_interval=0.2)
    m.start()
    first = _push_time(monitoring.gateway, job="jestflow", run_id="heartbeat-1")
    time.sleep(1.0)  # no step, no progress: only the heartbeat pushes
    later = _push_time(monitoring.gateway, job="jestflow", run_id="heartbeat-1")
    assert first is not None and later is not None and later > first
    m.end()
    assert _push_time(monitoring.gateway, job="jestflow", run_id="heartbeat-1") is None
    assert _push_time(monitoring.gateway, job="jestflow_results", run_id="heartbeat-1") is not None
    time.sleep(0.5)  # the heartbeat stopped with the stage: nothing re-creates the live group
    assert _push_time(monitoring.gateway, job="jestflow", run_id="heartbeat-1") is None
