"""What the Kubeflow component bodies call: one function per component.

Components pass plain values and artifact objects (anything with ``.path`` and, for metrics,
``.log_metric``); these functions map them onto `jestflow.stages`. The pipeline's knobs are resolved
once, in `prepare`, into a config artifact (``config.yaml``) that every later step reads, so a bad
parameter fails before any GPU is requested.
"""

from __future__ import annotations

import math
import os

from .. import config as C
from .. import stages, storage
from ..core import flops

# pipeline parameter -> config key; 0 / "" leave the preset's value
KNOBS = {
    "model_size": "model.size",
    "reference_steps": "reference.steps",
    "steps": "learner.steps",
    "batch_size": "learner.batch_size",
    "filter_ratio": "select.filter_ratio",
    "n_chunks": "select.n_chunks",
}


def knob_overrides(params: dict) -> list[str]:
    """Pipeline parameters (by name, as the pipeline and `jestflow submit` have them) -> --set overrides."""
    out = [f"{key}={params[name]}" for name, key in KNOBS.items() if params.get(name)]
    seed = params.get("seed", 0)
    if seed >= 0:
        out += [f"reference.seed={seed}", f"learner.seed={seed}", f"demo.seed={seed}"]
    return out + [str(x) for x in (params.get("overrides") or [])]


def prepare(
    curated_uri: str,
    pool_uri: str,
    eval_uri: str,
    demo_dir: str,
    preset: str,
    model_size: str,
    reference_steps: int,
    steps: int,
    batch_size: int,
    filter_ratio: float,
    n_chunks: int,
    seed: int,
    overrides: list,
    config_out,
    demo_out=None,
    check_data: bool = False,
) -> tuple[str, str, str]:
    """Resolve and validate the configuration; write the demo data when no data URIs are given: into
    `demo_dir` (a folder on the data claim) or, when that is empty, into the `demo_out` artifact, which
    later steps read at its URI (so the pipeline root must be gs:// or local).

    A pure function of its parameters (the demo data is seeded), so the step is cached: a re-run with
    the same parameters reuses its artifacts, and the steps downstream get cache hits too."""
    knobs = locals()  # this function's parameters are the pipeline's, by name: knob_overrides picks its own
    cfg = C.load_config(preset, None, knob_overrides(knobs))
    os.makedirs(os.path.dirname(config_out.path) or ".", exist_ok=True)
    storage.write_bytes(config_out.path, C.dump(cfg).encode())
    given = [u for u in (curated_uri, pool_uri, eval_uri) if u]
    if given and len(given) != 3:
        raise ValueError("give all three of curated_uri, pool_uri and eval_uri, or none (demo data)")
    if demo_out is not None:
        os.makedirs(demo_out.path, exist_ok=True)  # an output folder exists even when unused
    if not given:
        from ..data.demo import demo_complete, make_demo

        if demo_dir:
            root = demo_dir
        elif demo_out is None:
            raise ValueError("no data URIs and no demo_dir: nowhere to put the demo data")
        elif not demo_out.uri.startswith(("gs://", "/")):
            raise ValueError(
                f"no data URIs given and the pipeline root {demo_out.uri.rsplit('/', 3)[0]!r} is neither gs:// "
                "nor local, so later steps cannot read demo data written there: give curated_uri, pool_uri "
                "and eval_uri (gs://), use a gs:// pipeline root, or set demo_dir to a folder on the data claim"
            )
        else:
            root = demo_out.uri
            demo_dir = demo_out.path  # the launcher uploads this folder to the URI when the step ends
        if not demo_complete(demo_dir):
            make_demo(demo_dir, cfg.demo)
        # checked where it was written: a gs:// root holds nothing until the launcher uploads the
        # artifact after this step returns (launcher_v2.go, executeV2 -> uploadOutputArtifacts)
        _check_data(cfg, [storage.join(demo_dir, s) for s in ("curated", "pool", "eval")])
        curated_uri, pool_uri, eval_uri = (storage.join(root, s) for s in ("curated", "pool", "eval"))
    elif check_data:  # your data, at its URIs: read every shard only when asked (a large pool takes long)
        _check_data(cfg, [curated_uri, pool_uri, eval_uri])
    # Also on the config artifact: steps inside a ParallelFor read the pool from there (kfp.local 2.17
    # replaces a loop task's inputs that are other tasks' output parameters with the loop item).
    config_out.metadata.update({"curated": curated_uri, "pool": pool_uri, "eval": eval_uri})
    return curated_uri, pool_uri, eval_uri


def _check_data(cfg: C.Config, splits: list[str]) -> None:
    """`jestflow data check` on the run's splits: fail before any GPU is requested if one would fail later."""
    from ..data.check import check_split

    lines, bad = [], False
    for uri in splits:
        r = check_split(uri, cfg.reference.max_bad_fraction, cfg.model.image_size)
        lines += r.lines(cfg.reference.max_bad_fraction)
        bad |= bool(r.problems)
    print("\n".join(lines), flush=True)
    if bad:
        problems = [ln.strip() for ln in lines if "PROBLEM:" in ln]
        raise ValueError(f"data check failed: {'; '.join(problems[:5])}" + (" ..." if len(problems) > 5 else ""))


def _load(config_path: str, method: str | None = None) -> C.Config:
    import yaml

    with storage.open_read(config_path) as f:
        cfg = C.from_dict(yaml.safe_load(f))
    return cfg.with_method(method) if method else cfg


def _log(metrics, values: dict, prefix: str = "") -> None:
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            metrics.log_metric(prefix + k, float(v))


def run_id() -> str:
    """This run's id: on a cluster the pod's `pipeline/runid` label (the pipeline maps it to
    $JESTFLOW_RUN_ID with the downward API), locally what `jestflow run` set; "" when unknown.

    An environment variable rather than an input parameter: KFP's cache key covers every input
    parameter, so a per-run input would make every cached step miss (see the pipeline's `_common`)."""
    from .metrics import ENV_RUN_ID

    return os.environ.get(ENV_RUN_ID, "")


def _stage_metrics(stage: str, method: str, part: str = ""):
    """Prometheus metrics pushed to $JESTFLOW_PUSHGATEWAY, or None when it is unset.

    An environment variable, not a pipeline parameter: the pipeline maps it from the cluster's ConfigMap
    (`jestflow-config`), so turning monitoring on or off changes no cache key (cacheutils/cache.go hashes
    every input parameter); `jestflow run` sets it for its local steps."""
    from .metrics import ENV_GATEWAY

    pushgateway = os.environ.get(ENV_GATEWAY, "")
    if not pushgateway:
        return None
    from .metrics import StageMetrics

    return StageMetrics(stage, method, run_id() or None, pushgateway, part=part)


def beside(artifact, what: str) -> str:
    """Durable storage that belongs to an output artifact without being part of it: `<its URI>.<what>`.

    KFP's launcher keeps a step's outputs in the pod's local folder and uploads them only after the step
    returns (backend/src/v2/component/launcher_v2.go, executeV2 -> uploadOutputArtifacts); a retry is a
    new pod with a new local folder but the same executor input, so the same output URIs (the driver ran
    once; argocompiler/container.go puts the retryStrategy on the executor template). What must survive
    a retry (checkpoints, finished score files) goes here. It is outside the artifact's prefix, so a
    downstream step that takes the artifact as input does not download it (launcher_v2.go
    downloadArtifacts copies an input artifact's whole prefix)."""
    return f"{artifact.uri.rstrip('/')}.{what}"


def train_reference(config, curated_uri: str, reference, metrics, reference_model: str = "") -> None:
    """Train the reference, or (`reference_model` given) fetch that pretrained model instead: no training."""
    cfg = _load(config.path)
    if reference_model:
        stages.fetch_reference(cfg, reference_model, reference.path)
        _log(metrics, {"steps": 0, "flops_total": 0.0, "pretrained": 1})
        print(f"reference: {reference_model} (pretrained; not trained)", flush=True)
        return
    s = stages.train_reference(
        cfg,
        curated_uri,
        reference.path,
        progress=True,
        metrics=_stage_metrics("reference", "reference"),
        checkpoint_dir=beside(reference, "checkpoint"),  # a retried pod resumes from here
    )
    _log(metrics, {"steps": s["steps"], "flops_total": s["flops_total"], "wall_seconds": s["wall_seconds"]})


def score(config, reference, part: int, parts: list, scores) -> None:
    """One branch of the fan-out (`parts` is the loop's item list): the reference over pool shards
    part, part + len(parts), ... of the pool `prepare` recorded on the config artifact."""
    from ..data.shards import list_shards
    from ..training.score_cache import part_shards

    pool_uri = (config.metadata or {}).get("pool")
    if not pool_uri:
        raise ValueError(f"config artifact {config.path} carries no pool URI in its metadata (written by prepare)")
    if sorted(int(p) for p in parts) != list(range(len(parts))):
        raise ValueError(f"score_parts must be 0, 1, ..., n-1; got {parts}")
    part, parts = int(part), len(parts)  # a loop item can arrive as a float
    shards = part_shards(list_shards(pool_uri), part, parts)
    idx = stages.score(
        _load(config.path),
        reference.path,
        pool_uri,
        scores.path,  # the small part: index.json and tokenizer.json
        shards=shards,
        metrics=_stage_metrics("score", "reference", part=str(part)),
        data_uri=beside(scores, "shards"),  # the score files: written where they stay, found again by a retry
        reference_uri=reference.uri,
    )
    scores.metadata.update({"n": idx["n"], "shards": len(idx["shards"]), "part": part, "parts": parts})


def merge_scores(parts: list, pool_uri: str, scores) -> None:
    """Join the fan-out's partial caches into the one cache the learners read."""
    from ..training.score_cache import merge_caches

    idx = merge_caches([p.path for p in parts], pool_uri, scores.path)
    scores.metadata.update(
        {"n": idx["n"], "shards": len(idx["shards"]), "parts": len(parts), "skipped": sum(idx["skipped"].values())}
    )


def train_learner(
    config,
    method: str,
    match_flops_of: str,
    pool_uri: str,
    eval_uri: str,
    scores,
    reference,
    model,
    metrics,
) -> None:
    """`match_flops_of`: empty, or the method whose total compute this (uniform) run matches."""
    from ..methods import get_method

    cfg = _load(config.path, method)
    if match_flops_of:  # the uniform baseline at equal total compute: more, cheaper steps
        cfg = stages.flops_matched(cfg, match_flops_of, scores.path)
    label = f"{method}@flops" if match_flops_of else method
    uses_reference = get_method(method).uses_reference
    s = stages.train_learner(
        cfg,
        pool_uri,
        model.path,
        scores.path if uses_reference else None,
        eval_uri,
        tokenizer_from=reference.path,
        metrics=_stage_metrics("learner", label),
        checkpoint_dir=beside(model, "checkpoint"),  # a retried pod resumes from here
    )
    _learner_outputs(s, label, model, metrics)


def _learner_outputs(s: dict, label: str, model, metrics, **extra) -> None:
    """A trained learner's summary onto its Model artifact's metadata and its Metrics artifact."""
    model.metadata.update({"method": s["method"], "label": label, "steps": s["steps"], **extra})
    _log(
        metrics,
        {
            "steps": s["steps"],
            "flops_total": flops.run_total(s),
            "clean_fraction": s["clean_fraction"],
            "wall_seconds": s["wall_seconds"],
        },
    )


def evaluate(config, model, eval_uri: str, metrics, results) -> None:
    label = (model.metadata or {}).get("label") or (model.metadata or {}).get("method", "")
    m = stages.evaluate_model(_load(config.path), model.path, eval_uri, results.path, _stage_metrics("evaluate", label))
    _log(metrics, {k: v for k, v in m.items() if k not in ("n",)})


def report(named: dict, report_md, summary, config=None, scores=None, pool_uri: str = "", report_html=None) -> dict:
    """`named`: run name -> (model artifact, evaluation-results artifact); the first is the curated
    learner, whose curation table (over `pool_uri`, with the reference's `scores`) the HTML report shows."""
    from ..reporting.run_report import inline_images, write_report

    runs = {
        name: {"summary": storage.read_json(storage.join(m.path, "train.json")), "final": storage.read_json(e.path)}
        for name, (m, e) in named.items()
    }
    results = write_report(runs, summary.path)
    os.makedirs(os.path.dirname(report_md.path) or ".", exist_ok=True)
    with storage.open_read(storage.join(summary.path, "report.md")) as f:
        storage.write_bytes(report_md.path, inline_images(f.read().decode(), summary.path).encode())
    summary.metadata.update({"runs": list(named)})
    if report_html is not None:
        page = write_html_report(runs, results, summary.path, named, config, scores, pool_uri)
        os.makedirs(os.path.dirname(report_html.path) or ".", exist_ok=True)
        with storage.open_read(page) as f:
            storage.write_bytes(report_html.path, f.read())
    gateway = os.environ.get("JESTFLOW_PUSHGATEWAY", "")
    if gateway and run_id():  # the run's results are in its KFP metrics and its report now
        from .metrics import delete_run_results

        print(f"deleted {delete_run_results(gateway, run_id())} result groups of run {run_id()} from {gateway}")
    return results


def write_html_report(runs: dict, results: dict, out_dir: str, named: dict, config, scores, pool_uri: str) -> str:
    """curation.parquet (the curated learner's view of the pool) and report.html in `out_dir`."""
    import platform

    from .. import __version__
    from ..methods import get_method
    from ..reporting.curation_table import curation_table, write_parquet
    from ..reporting.html_report import write_html
    from ..training.devices import resolve_device

    selected, (model, _) = next(iter(named.items()))
    cfg = _load(config.path) if config is not None else None
    table = None
    if scores is not None and pool_uri and get_method(selected).uses_reference:
        batch = cfg.eval.batch_size if cfg else 256
        device = resolve_device(cfg.learner.device if cfg else "auto")
        # a sample of the pool: the report's galleries and histograms need no more, and a pool of
        # billions would take the report step as long as scoring did
        table = curation_table(model.path, scores.path, pool_uri, batch, device, progress=False,
                               max_shards=REPORT_POOL_SHARDS)  # fmt: skip
        write_parquet(table, storage.join(out_dir, "curation.parquet"), {"model": model.uri, "pool": pool_uri})
    config_text = ""
    if config is not None:
        with storage.open_read(config.path) as f:
            config_text = f.read().decode()
    index = storage.read_json(storage.join(scores.path, "index.json")) if scores is not None else {}
    provenance = {
        "versions": {"jestflow": __version__, "python": platform.python_version(), **_versions()},
        "data": {"pool": pool_uri, "pool shards (name, bytes, fingerprint)": [
            (e["shard"], e["bytes"], e.get("fingerprint")) for e in index.get("shards", [])
        ]},
        "reference": index.get("reference"),
        "models": {name: m.uri for name, (m, _) in named.items()},
        "score cache": scores.uri if scores is not None else None,
    }  # fmt: skip
    return write_html(out_dir, results, runs, table, pool_uri, config_text, provenance)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "kfp", "numpy", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


REPORT_POOL_SHARDS = 32  # pool shards the report's curation table covers (`jestflow export` covers all)
SHARED_ROOTS = ("gs://", "/data/")  # what every pod of a multi-node job reaches: GCS and the data claim


def _shared_uri(artifact, what: str, roots=SHARED_ROOTS) -> str:
    """Where the job's pods reach an artifact: its remote URI (gs://) or a path on the data claim."""
    uri = artifact.uri
    if uri.startswith(tuple(roots)):
        return uri
    raise ValueError(
        f"{what} artifact lives at {uri!r}, which the training job's pods cannot reach; "
        "use a gs:// pipeline root (or paths under /data on a ReadWriteMany claim) for multi-node training"
    )


def train_learner_multinode(
    config,
    method: str,
    pool_uri: str,
    eval_uri: str,
    scores,
    reference,
    model,
    metrics,
    nodes: int,
    gpus_per_node: int,
    image: str,
    job_kind: str = "trainjob",
    namespace: str = "",
    accelerator_type: str = "nvidia.com/gpu",
    node_selector: dict | None = None,
    data_claim: str = "",
    api=None,
    poll_seconds: float = 15.0,
    shared_roots=SHARED_ROOTS,
) -> dict:
    """Stage 3 on several nodes: a Kubeflow Trainer TrainJob (`job_kind="trainjob"`) or Training
    Operator PyTorchJob (`"pytorchjob"`) runs torchrun (`training_jobs.LAUNCHER`) `-m jestflow train` on every node.

    `api` is a `kubernetes.client.CustomObjectsApi` (default: in-cluster configuration)."""
    from . import training_jobs

    kind = training_jobs.get_kind(job_kind)
    cfg_uri, out = _shared_uri(config, "config", shared_roots), _shared_uri(model, "model", shared_roots)
    args = ["-m", "jestflow", "train", "--method", method, "--data", pool_uri, "--eval", eval_uri]
    args += ["--scores", _shared_uri(scores, "scores", shared_roots)]
    args += ["--tokenizer-from", _shared_uri(reference, "reference", shared_roots)]
    args += ["--out", out, "--preset", "", "--config", cfg_uri, "--quiet"]
    gateway = os.environ.get("JESTFLOW_PUSHGATEWAY", "")
    if gateway:  # the job's pods get no ConfigMap: the launcher hands its own setting on
        args += ["--pushgateway", gateway, "--run-id", run_id()]
    name = training_jobs.job_name(run_id() or "run", method)
    spec = training_jobs.JobSpec(
        name=name,
        namespace=namespace or training_jobs.current_namespace(),
        image=image,
        args=args,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        accelerator=accelerator_type,
        node_selector=dict(node_selector or {}),
        data_claim=data_claim,
        owner=training_jobs.current_pod(),
    )
    if api is None:
        from kubernetes import client
        from kubernetes import config as kube_config

        kube_config.load_incluster_config()
        api = client.CustomObjectsApi()
    training_jobs.run(api, training_jobs.render(spec, job_kind), poll_seconds=poll_seconds)
    s = storage.read_json(storage.join(out, "train.json"))
    extra = {"nodes": nodes, "world_size": s.get("world_size", 1), "job": f"{kind.kind}/{name}"}
    _learner_outputs(s, method, model, metrics, **extra)
    return s
