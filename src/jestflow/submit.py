"""`jestflow submit`: compile the pipeline and start a run on a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import os
import tempfile

import yaml

from . import config as C
from .selection import METHODS

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


def submit(
    host: str,
    params: list[str],
    experiment: str = "jestflow",
    run_name: str | None = None,
    gpu: bool = True,
    namespace: str | None = None,
) -> str:
    """Compile, validate, submit; return the run's URL."""
    from kfp import compiler

    from jestflow_pipelines.jest_pipeline import jest_pipeline, jest_pipeline_cpu

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipeline.yaml")
        compiler.Compiler().compile(jest_pipeline if gpu else jest_pipeline_cpu, path)
        args = parse_params(params, pipeline_parameters(path))
        check_config(args)
        run_id = _create_run(host, path, args, experiment, run_name, namespace)
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def _create_run(host, path, args, experiment, run_name, namespace) -> str:
    import warnings

    import kfp

    warnings.filterwarnings("ignore", message="This client only works with", category=FutureWarning)
    try:
        client = kfp.Client(host=host, namespace=namespace)
        run = client.create_run_from_pipeline_package(
            path, arguments=args, experiment_name=experiment, run_name=run_name, namespace=namespace
        )
        return run.run_id
    except Exception as e:  # connection errors, HTTP errors, auth errors: one line, no traceback
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"could not submit to Kubeflow Pipelines at {host}: {type(e).__name__}: {reason[:300]}"
        ) from None
