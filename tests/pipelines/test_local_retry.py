"""A retried step resumes at its checkpoint, under KFP's own local runner with retries on.

kfp.local 2.17 retries a task with `set_retry` in place (kfp/local/task_dispatcher.py: the same task
root, so the same output URIs, on every attempt), as a cluster's retry does (the driver runs once per
task and salts the output URIs then: backend/src/v2/driver/driver.go provisionOutputs; Argo's
retryStrategy sits on the executor template: backend/src/v2/compiler/argocompiler/container.go). The
test preempts the first attempt's process with SIGTERM once a checkpoint exists; the second attempt
must resume there, not at step 0. (kfp.local keeps a task's local folder across attempts, where a
cluster's retry is a fresh pod: that difference is tested with the launcher stand-in in
tests/components/test_kfp_steps.py, test_a_retried_step_resumes_from_its_durable_checkpoint.)"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TINY = ["demo.n_curated=64", "demo.n_pool=40", "demo.n_eval=40", "demo.shard_size=40",
        "reference.batch_size=16", "reference.shuffle_buffer=16", "reference.checkpoint_every=5"]  # fmt: skip
STEPS = 400


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc: Linux)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


PIPELINE = """
import json, sys
from pathlib import Path
from kfp import dsl, local
from jestflow_components.prepare.component import prepare
from jestflow_components.train_reference.component import train_reference

local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[1], raise_on_error=True)

@dsl.pipeline(name="retry")
def retry_pipeline() -> dsl.Model:
    prep = prepare(curated_uri="", pool_uri="", eval_uri="", demo_dir="", preset="smoke", model_size="",
                   reference_steps=STEPS, steps=2, batch_size=0, filter_ratio=0.0, n_chunks=0, seed=0,
                   overrides=TINY, check_data=False)
    ref = train_reference(config=prep.outputs["config"], curated_uri=prep.outputs["curated"])
    ref.set_retry(num_retries=1, backoff_duration="0s")
    return ref.outputs["reference"]

task = retry_pipeline()
print("trained steps:", json.loads(Path(task.output.path, "train.json").read_text())["steps"])
"""


@pytest.mark.slow
def test_a_retry_under_kfp_local_resumes_from_the_checkpoint(tmp_path):
    # In its own process: kfp.local re-points this process's stdout while it runs tasks (its indented
    # task logs), which would leak into later tests.
    root = tmp_path / "root"
    script = tmp_path / "retry_pipeline.py"
    script.write_text(f"STEPS = {STEPS}\nTINY = {TINY!r}\n" + PIPELINE)
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    preempted: list[str] = []

    def preempt():  # what Kubernetes does to a preempted pod: SIGTERM to the step's process
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if list(root.rglob("reference.checkpoint/checkpoint.pt")):
                for pid in _children(proc.pid):
                    if "train_reference" in _cmdline(pid) or "train-reference" in _cmdline(pid):
                        os.kill(pid, signal.SIGTERM)
                        preempted.append(_cmdline(pid)[:200])
                if preempted:
                    return
            time.sleep(0.05)

    threading.Thread(target=preempt, daemon=True).start()
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    assert preempted, "the first attempt was never preempted"
    assert "SIGTERM received; checkpoint written at step" in log, log[-3000:]
    assert "reference: resuming from step " in log and f" of {STEPS} (" in log, log[-3000:]
    assert f"trained steps: {STEPS}" in log
