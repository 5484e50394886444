"""`jestflow submit` against a local stand-in of the KFP REST API (no real backend can run here)."""

import re
import subprocess
import sys

import pytest
from fake_kfp import FakeKFP

from jestflow.platform.submit import submit, watch


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
    assert url == "run-0001"
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
    assert "nvidia.com/gpu" in str(run["pipeline_spec"]["pipeline_spec"]["root"])  # accelerator_type's default
    # Every pod runs as the account manifests/base creates (the API server sets it on the workflow).
    assert run["service_account"] == "jestflow-runner"


def test_cpu_variant_for_kind():
    with FakeKFP() as kfp:
        submit(kfp.url, [], variant="cpu")
        run = [b for m, p, b in kfp.requests if p.startswith("/apis/v2beta1/runs")][0]
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "jestflow-jest-cpu"


@pytest.mark.parametrize(
    "params,message",
    [
        pytest.param(["stepz=3"], "unknown pipeline parameter 'stepz'", id="unknown-parameter"),
        pytest.param(["steps=abc"], "steps='abc': expected int", id="wrong-type"),
        pytest.param(["filter_ratio=1.5"], "filter_ratio=1.5 must be in (0, 1)", id="bad-value"),
        pytest.param(["method=magic"], "method='magic' is not one of", id="bad-method"),
        pytest.param([], "could not reach Kubeflow Pipelines at http://127.0.0.1:9", id="unreachable-host"),
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


def _run_body(kfp):
    return next(b for m, p, b in kfp.requests if m == "POST" and p.startswith("/apis/v2beta1/runs"))


def test_submit_options_reach_the_run():
    """--service-account, --pipeline-root, --no-cache, --token and --multinode, as the KFP v2beta1 run
    API takes them (kubeflow/pipelines backend/api/v2beta1/run.proto: Run.service_account,
    RuntimeConfig.pipeline_root; the client writes enable_caching into each task's cachingOptions)."""
    with FakeKFP() as kfp:
        submit(
            kfp.url,
            ["job_kind=pytorchjob"],
            variant="multinode",
            service_account="team-sa",
            pipeline_root="gs://bucket/jestflow",
            token="s3cret",
            caching=False,
        )
        run, headers = _run_body(kfp), kfp.headers
    assert run["service_account"] == "team-sa"
    assert run["runtime_config"]["pipeline_root"] == "gs://bucket/jestflow"
    assert run["runtime_config"]["parameters"] == {"job_kind": "pytorchjob"}
    spec = run["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "jestflow-jest-multinode"
    cached = [t.get("cachingOptions", {}).get("enableCache") for t in spec["root"]["dag"]["tasks"].values()]
    assert cached and not any(cached)
    auth = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in headers]
    assert auth and all(a == "Bearer s3cret" for a in auth), headers[:1]  # the health check's too


def test_empty_pipeline_root_is_refused():
    with pytest.raises(ValueError, match="--pipeline-root is empty"):
        submit("http://127.0.0.1:9", [], pipeline_root=" ")


@pytest.mark.parametrize(
    "states,error,code,said",
    [
        (("PENDING", "RUNNING", "SUCCEEDED"), None, 0, "run run-0001: SUCCEEDED"),
        (
            ("RUNNING", "FAILED"),
            "task train-learner failed: OOMKilled",
            1,
            "failed: task train-learner failed: OOMKilled",
        ),
        (("RUNNING", "CANCELING", "CANCELED"), None, 1, "canceled: no error message"),
    ],
)
def test_watch_follows_the_run_to_its_end(states, error, code, said):
    """The end states are kubeflow/pipelines backend/api/v2beta1/run.proto's RuntimeState SUCCEEDED,
    SKIPPED, FAILED and CANCELED (kfp.Client.wait_for_run_completion misses CANCELED and would wait
    for its timeout)."""
    lines = []
    with FakeKFP(states=states, error=error) as kfp:
        assert watch(kfp.url, "run-0001", poll_seconds=0.01, log=lines.append) == code
    assert [ln.split(": ")[1] for ln in lines if ln.startswith("run run-0001: ")] == list(dict.fromkeys(states))
    assert said in "\n".join(lines)


def test_cli_watch_exits_non_zero_when_the_run_fails():
    with FakeKFP(states=("RUNNING", "FAILED"), error="boom") as kfp:
        r = subprocess.run(
            [sys.executable, "-m", "jestflow", "submit", "--host", kfp.url, "--cpu", "--watch"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**__import__("os").environ, "JESTFLOW_WATCH_POLL": "0.05"},
        )
    assert r.returncode == 1, r.stderr
    assert f"{kfp.url}/#/runs/details/run-0001" in r.stdout and "run run-0001 failed: boom" in r.stdout


def test_a_host_that_never_answers_is_one_line_within_the_timeout():
    """Issue 16: an endpoint that accepts connections but never answers hung `jestflow submit`
    forever (kfp.Client sets no timeout), and `--host 127.0.0.1:8080` silently became https."""
    import os
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts into the backlog, never reads or answers
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "jestflow", "submit", "--host", host, "--cpu"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "JESTFLOW_KFP_TIMEOUT": "2"},
        )
        took = time.monotonic() - t0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0] == f"jestflow: error: could not reach Kubeflow Pipelines at {host}: no answer within 2 s"
    assert took < 60
    r = subprocess.run(
        [sys.executable, "-m", "jestflow", "submit", "--host", "127.0.0.1:9", "--cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--host '127.0.0.1:9' has no scheme: give http://127.0.0.1:9" in r.stderr


@pytest.mark.parametrize(
    "host,message",
    [
        ("http://localhost:80x", "the port is not a number from 0 to 65535"),
        ("http://local host:8080", "is not a URL (empty, or it contains a space)"),
        ("ftp://localhost:8080", "the scheme must be http or https, not 'ftp'"),
        ("http://:8080", "names no host"),
        ("localhost:8080", "has no scheme: give http://localhost:8080"),
    ],
)
def test_a_malformed_host_is_refused_before_anything_is_compiled(host, message, monkeypatch):
    """Issue 27: these took 7-15 s (the pipeline compiled first) or ended in a traceback (port, space)."""
    from kfp import compiler

    from jestflow.platform import submit as sub

    def no_compile(*a, **k):
        raise AssertionError("compiled before checking the host")

    monkeypatch.setattr(compiler.Compiler, "compile", no_compile)
    with pytest.raises(ValueError, match=re.escape(message)):
        sub.submit(host, [], variant="cpu")
