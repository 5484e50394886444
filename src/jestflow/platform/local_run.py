"""`jestflow run`: the very same Kubeflow pipeline, executed on this machine by KFP's local runner.

`kfp.local.SubprocessRunner` runs each component as a subprocess with this Python (the image is not
used locally, nor are kfp-kubernetes settings). Outputs of every task stay under ``OUT/kfp/``; the
report's results, Markdown and plots are copied to ``OUT``. KFP's own logs (each task's streamed output,
~2,000 lines for the smoke run) go to ``OUT/kfp/run.log``; the console shows each task's start and end
and every warning and error line (`verbose`: everything on the console, as KFP prints it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
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
    verbose: bool = False,
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
    (out_p / "kfp").mkdir(exist_ok=True)
    try:
        with kfp_log(None if verbose else str(out_p / "kfp" / "run.log")):
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


# What the console shows of KFP's log: task starts and ends, and warnings and errors from any task.
_SHOWN = re.compile(rb"Running pipeline|Executing task|finished with status|warning|error|failed", re.I)
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def kfp_log(path: str | None, tail: int = 30):
    """Send everything written to this process's stdout and stderr, and its subprocesses' (the tasks),
    to the file `path`, echoing the lines `_SHOWN` matches to the console; if the block fails, the log's
    last `tail` lines follow on stderr with its path. None: leave the console as it is."""
    if path is None:
        yield
        return
    sys.stdout.flush(), sys.stderr.flush()
    console_out, console_err = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1), os.dup2(fd, 2)
    os.close(fd)
    done = threading.Event()

    def follow():
        with open(path, "rb") as f:
            rest = b""
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    if done.is_set():
                        break
                    time.sleep(0.2)
                    continue
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    line = _ANSI.sub(b"", line).strip()
                    if _SHOWN.search(line):
                        os.write(console_out, line + b"\n")

    echo = threading.Thread(target=follow, daemon=True)
    echo.start()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(console_out, 1), os.dup2(console_err, 2)
        done.set()
        echo.join(10)
        os.close(console_out), os.close(console_err)
        if failed:
            with open(path, "rb") as f:
                last = _ANSI.sub(b"", f.read()).decode("utf-8", "replace").splitlines()[-tail:]
            print(f"--- the last {len(last)} lines of KFP's log {path}:", *last, "---", sep="\n", file=sys.stderr)
        else:
            print(f"KFP's log: {path}", flush=True)
