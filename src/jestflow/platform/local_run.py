"""`jestflow run`: the very same Kubeflow pipeline, executed on this machine by KFP's local runner.

`kfp.local.SubprocessRunner` runs each component as a subprocess with this Python (the image is not
used locally, nor are kfp-kubernetes settings). Outputs of every task stay under ``OUT/kfp/``; the
report's results, Markdown and plots are copied to ``OUT``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .. import config as C


def run_local(
    preset: str,
    overrides: list[str],
    out: str,
    data_dir: str | None = None,
    curated: str = "",
    pool: str = "",
    eval_uri: str = "",
    method: str | None = None,
    pushgateway: str = "",
    run_id: str = "",
    config_file: str | None = None,
    reference_model: str = "",
) -> dict:
    """`config_file` travels into the pipeline as overrides (before `overrides`, which win).
    `reference_model`: a pretrained SigLIP the reference step fetches instead of training one."""
    overrides = [*(C.file_overrides(config_file) if config_file else []), *overrides]
    cfg = C.load_config(preset, None, overrides)  # fail fast, with jestflow's message, on a bad key or value
    if reference_model and cfg.model.arch != "hf-siglip":
        raise ValueError("--reference-model needs --set model.arch=hf-siglip (the learners use its tokenizer)")
    import kfp.local

    from jestflow_pipelines.jest_pipeline import jest_pipeline_cpu

    out_p = Path(out).resolve()
    out_p.mkdir(parents=True, exist_ok=True)
    given = [u for u in (curated, pool, eval_uri) if u]
    if given and len(given) != 3:
        raise ValueError("give all three of --curated, --pool and --eval, or none (demo data)")
    demo_dir = str(Path(data_dir or f"data/{preset}").resolve())
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(out_p / "kfp"), raise_on_error=True
    )
    method = method or cfg.select.method
    t0 = time.time()
    from .metrics import ENV_GATEWAY, ENV_RUN_ID, default_run_id

    # On a cluster each step reads the run id from its pod's label and the Pushgateway from the ConfigMap;
    # here the subprocesses inherit both from this process.
    env = {ENV_RUN_ID: run_id or default_run_id(), ENV_GATEWAY: pushgateway}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        task = jest_pipeline_cpu(
            curated_uri=curated,
            pool_uri=pool,
            eval_uri=eval_uri,
            demo_dir=demo_dir,
            preset=preset,
            method=method,
            overrides=list(overrides),
            reference_model=reference_model,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    summary_dir = task.outputs["summary"].path
    for name in os.listdir(summary_dir):
        shutil.copy2(os.path.join(summary_dir, name), out_p / name)
    from .. import storage

    results = storage.read_json(str(out_p / "results.json"))
    results["pipeline_seconds"] = time.time() - t0
    storage.write_json(str(out_p / "results.json"), results)
    return results
