"""`jestflow submit` against a local stand-in of the KFP REST API (no real backend can run here)."""

import subprocess
import sys

import pytest
from fake_kfp import FakeKFP

from jestflow.submit import submit


def test_submit_creates_experiment_and_run_with_typed_parameters():
    with FakeKFP() as kfp:
        url = submit(
            kfp.url,
            [
                "steps=500",
                "filter_ratio=0.9",
                "method=independent",
                "pool_uri=gs://b/pool",
                "curated_uri=gs://b/cur",
                "eval_uri=gs://b/eval",
            ],
            experiment="nightly",
        )
        posted = {path.split("?")[0]: body for method, path, body in kfp.requests if method == "POST"}
    assert url == f"{kfp.url}/#/runs/details/run-0001"
    assert posted["/apis/v2beta1/experiments"]["display_name"] == "nightly"
    run = posted["/apis/v2beta1/runs"]
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {
        "steps": 500,
        "filter_ratio": 0.9,
        "method": "independent",
        "pool_uri": "gs://b/pool",
        "curated_uri": "gs://b/cur",
        "eval_uri": "gs://b/eval",
    }
    # The spec travels with its kubernetes platform spec (tolerations, node selector, PVC mount).
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "jestflow-jest"
    assert "nvidia.com/gpu" in str(run["pipeline_spec"]["platform_spec"])


def test_cpu_variant_for_kind():
    with FakeKFP() as kfp:
        submit(kfp.url, [], gpu=False)
        run = [b for m, p, b in kfp.requests if p.startswith("/apis/v2beta1/runs")][0]
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "jestflow-jest-cpu"


@pytest.mark.parametrize(
    "params,message",
    [
        pytest.param(["stepz=3"], "unknown pipeline parameter 'stepz'", id="unknown-parameter"),
        pytest.param(["steps=abc"], "steps='abc': expected int", id="wrong-type"),
        pytest.param(["filter_ratio=1.5"], "filter_ratio=1.5 must be in (0, 1)", id="bad-value"),
        pytest.param(["method=magic"], "method='magic' is not one of", id="bad-method"),
        pytest.param([], "could not submit to Kubeflow Pipelines at http://127.0.0.1:9", id="unreachable-host"),
    ],
)
def test_submit_errors_are_one_line(params, message):
    args = [a for p in params for a in ("--param", p)]
    r = subprocess.run(
        [sys.executable, "-m", "jestflow", "submit", "--host", "http://127.0.0.1:9", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("jestflow: error:") and message in lines[0], r.stderr
