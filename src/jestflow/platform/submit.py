"""`jestflow submit`: compile the pipeline and start a run on a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import os
import tempfile

import yaml

from .. import config as C
from ..methods import METHODS

_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool, "LIST": list, "STRUCT": dict}


def pipeline_parameters(spec_path: str) -> dict[str, str]:
    """Name -> KFP parameter type of the compiled pipeline's inputs."""
    with open(spec_path) as f:
        spec = next(yaml.safe_load_all(f))  # the pipeline spec; a platform spec (kubernetes) may follow
    params = spec["root"]["inputDefinitions"]["parameters"]
    return {k: v["parameterType"] for k, v in params.items()}


def parse_params(items: list[str], types: dict[str, str]) -> dict:
    """``["steps=200", "method=jest"]`` -> typed arguments, checked against the pipeline's inputs."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param expects name=value, got {item!r}")
        name, raw = item.split("=", 1)
        if name not in types:
            raise ValueError(f"unknown pipeline parameter {name!r} (known: {', '.join(sorted(types))})")
        want = _TYPES[types[name]]
        value = yaml.safe_load(raw) if raw else ""
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is str and not isinstance(value, str):
            value = raw
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ValueError(f"pipeline parameter {name}={raw!r}: expected {want.__name__}")
        out[name] = value
    return out


def check_config(args: dict) -> None:
    """Resolve the configuration the run would use, so a bad value fails here and not on the cluster."""
    from .kfp_steps import knob_overrides

    C.load_config(args.get("preset", "demo"), None, knob_overrides(args))
    if args.get("method") and args["method"] not in METHODS:
        raise ValueError(f"method={args['method']!r} is not one of {', '.join(METHODS)}")


VARIANTS = ("gpu", "cpu", "multinode")
# kubeflow/pipelines backend/api/v2beta1/run.proto, RuntimeState: the states a run ends in.
DONE = {"SUCCEEDED": 0, "SKIPPED": 0, "FAILED": 1, "CANCELED": 1}
TOKEN_ENV = "KFP_TOKEN"


def submit(
    host: str,
    params: list[str],
    experiment: str = "jestflow",
    run_name: str | None = None,
    variant: str = "gpu",
    namespace: str | None = None,
    service_account: str = "jestflow-runner",
    pipeline_root: str | None = None,
    token: str | None = None,
    caching: bool = True,
) -> str:
    """Compile the `variant` pipeline, validate the parameters, create a run; return its id.

    `service_account`: what every pod of the run runs as (manifests/base/rbac.yaml creates it; "" for
    the backend's default, pipeline-runner). `pipeline_root`: where artifacts go (e.g. gs://bucket/root;
    default: the backend's). `token`: a bearer token for KFP behind IAP or Dex (default $KFP_TOKEN).
    `caching=False` runs every step afresh (after the data behind a URI changed)."""
    check_host(host)  # a typo is refused before the pipeline is compiled
    from kfp import compiler

    from jestflow_pipelines import jest_pipeline as pipelines

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
    pipeline = {"gpu": pipelines.jest_pipeline, "cpu": pipelines.jest_pipeline_cpu}.get(
        variant, pipelines.jest_pipeline_multinode
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipeline.yaml")
        compiler.Compiler().compile(pipeline, path)
        args = parse_params(params, pipeline_parameters(path))
        check_config(args)
        if pipeline_root is not None and not pipeline_root.strip():
            raise ValueError("--pipeline-root is empty: give a URI such as gs://bucket/jestflow, or leave it out")
        client = _client(host, namespace, token)
        return _call(
            host,
            lambda: (
                client.create_run_from_pipeline_package(
                    path,
                    arguments=args,
                    experiment_name=experiment,
                    run_name=run_name,
                    namespace=namespace,
                    pipeline_root=pipeline_root,
                    enable_caching=None if caching else False,
                    service_account=service_account or None,
                ).run_id
            ),
        )


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def watch(host: str, run_id: str, namespace=None, token=None, poll_seconds=None, timeout=None, log=print) -> int:
    """Follow run `run_id` until it ends; log each state change; return 0 if it succeeded, 1 if it
    failed or was cancelled (with the backend's error message)."""
    import time

    client = _client(host, namespace, token)
    poll_seconds = float(os.environ.get("JESTFLOW_WATCH_POLL", 10)) if poll_seconds is None else poll_seconds
    t0, last = time.monotonic(), None
    while True:
        run = _call(host, lambda: client.get_run(run_id), "follow the run on")
        state = str(run.state or "PENDING").upper()
        if state != last:
            log(f"run {run_id}: {state}")
            last = state
        if state in DONE:
            if DONE[state]:
                error = getattr(run, "error", None)
                detail = getattr(error, "message", None) or (str(error) if error else "no error message")
                log(f"run {run_id} {state.lower()}: {detail}. Details: {run_url(host, run_id)}")
            return DONE[state]
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f} s: {run_url(host, run_id)}")
        time.sleep(poll_seconds)


def request_timeout() -> float:
    """Seconds a KFP endpoint may take to answer one request ($JESTFLOW_KFP_TIMEOUT, default 30)."""
    raw = os.environ.get("JESTFLOW_KFP_TIMEOUT", "30")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"$JESTFLOW_KFP_TIMEOUT={raw!r} must be a number of seconds") from None


def check_host(host: str) -> None:
    """A KFP endpoint URL, checked before anything is compiled or sent: http(s), a host name, a numeric port,
    no spaces. One line naming what is wrong."""
    from urllib.parse import urlsplit

    if not host or any(c.isspace() for c in host):
        raise ValueError(f"--host {host!r} is not a URL (empty, or it contains a space)")
    if "://" not in host:
        raise ValueError(
            f"--host {host!r} has no scheme: give http://{host} (a port-forward, e.g. make kind-run's) or "
            f"https://{host} (KFP behind a load balancer, IAP or Dex)"
        )
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--host {host!r}: the scheme must be http or https, not {parts.scheme!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
    except ValueError:
        raise ValueError(f"--host {host!r}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"--host {host!r} names no host")


def _client(host, namespace, token):
    """A kfp.Client for `host`, once the endpoint has answered a health check within request_timeout()
    (kfp.Client itself would wait forever on an endpoint that accepts but never answers)."""
    import logging
    import socket
    import warnings

    import kfp

    check_host(host)
    warnings.filterwarnings("ignore", message="This client only works with", category=FutureWarning)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its retry chatter: one error instead
    token = token or os.environ.get(TOKEN_ENV) or None
    _health(host, token)
    socket.setdefaulttimeout(request_timeout())  # kfp's HTTP client has no timeout of its own
    return _call(host, lambda: kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token))


def _health(host: str, token: str | None) -> None:
    import urllib.error
    import urllib.request

    url = f"{host.rstrip('/')}/apis/v2beta1/healthz"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=request_timeout()):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise ValueError(
                f"Kubeflow Pipelines at {host} refused the request ({e.code}): behind IAP or Dex? "
                f"pass --token or set ${TOKEN_ENV}"
            ) from None
        return  # it answers; the API calls will say what is wrong
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"no answer within {request_timeout():.0f} s"
        raise ValueError(f"could not reach Kubeflow Pipelines at {host}: {reason}") from None


def _call(host, fn, what: str = "submit to"):
    try:
        return fn()
    except Exception as e:  # connection errors, HTTP errors, auth errors: one line, no traceback
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "401" in reason or "403" in reason or "Unauthorized" in reason:
            reason += f" (behind IAP or Dex? pass --token or set ${TOKEN_ENV})"
        raise ValueError(f"could not {what} Kubeflow Pipelines at {host}: {type(e).__name__}: {reason[:300]}") from None
