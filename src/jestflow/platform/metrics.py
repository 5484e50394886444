"""Prometheus metrics for jestflow stages, pushed to a Pushgateway (pipeline steps are batch jobs).

`StageMetrics` is a training `Callback` plus hooks for scoring and evaluation. It keeps its own
`CollectorRegistry`, so tests read values straight from it (`value()`), and pushes that registry to
a Pushgateway grouped by ``run_id``, ``stage`` and ``method``: every `push_interval` seconds while
work goes on (a heartbeat thread pushes even when a step hangs, so "stalled" and "dead" differ: the
gateway's ``push_time_seconds`` stays fresh while the process lives). When the stage ends, its final
values are pushed once to the group of job ``jestflow_results`` (a batch job's outcome, what a
Pushgateway is for) and its live group (job ``jestflow``) is *deleted*, so a finished stage leaves
nothing behind that could look running; the alerts read only the live job. A stage
that is killed leaves its group with a stale ``push_time_seconds``: the JestflowStageLost alert says
so for a day, then stops. If the gateway cannot be reached, one warning is logged, failures are
counted in ``jestflow_push_failures_total`` and the work goes on. docs/metrics.md lists every
metric; a test fails if one is documented but never set, or set but not documented.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import delete_from_gateway, push_to_gateway

log = logging.getLogger(__name__)
LABELS = ("run_id", "stage", "method")
ENV_GATEWAY = "JESTFLOW_PUSHGATEWAY"
ENV_RUN_ID = "JESTFLOW_RUN_ID"
JOB, RESULTS_JOB = "jestflow", "jestflow_results"  # live groups while a stage runs; its outcome after


ENV_RESULTS_GRACE = "JESTFLOW_RESULTS_GRACE"
RESULTS_GRACE = 45.0  # seconds a result group stays after its last push: 3 scrapes at the manifests' 15 s


def delete_run_results(gateway: str, run_id: str, timeout: float = 5.0, grace: float | None = None) -> int:
    """Delete every `jestflow_results` group of `run_id` from the gateway (the run's report step does, once
    the results are in its KFP metrics), so finished runs do not pile up there. A group is deleted only
    once `grace` seconds (env JESTFLOW_RESULTS_GRACE, default RESULTS_GRACE) have passed since its last
    push, waiting for the rest, so Prometheus has scraped its final values; they stay in Prometheus'
    history (query with last_over_time). Returns how many groups went; an unreachable gateway is logged
    once and skipped."""
    import json
    import urllib.request

    grace = float(os.environ.get(ENV_RESULTS_GRACE, RESULTS_GRACE)) if grace is None else grace
    try:
        with urllib.request.urlopen(f"{gateway.rstrip('/')}/api/v1/metrics", timeout=timeout) as r:
            groups = json.load(r).get("data") or []
    except Exception as e:  # the report goes on; the groups stay until the next run's report
        log.warning("could not list the Pushgateway's groups at %s (%s); the run's results stay there", gateway, e)
        return 0
    ours = []
    for g in groups:
        labels = dict(g.get("labels") or {})
        if labels.pop("job", None) == RESULTS_JOB and labels.get("run_id") == run_id:
            pushed = g.get("push_time_seconds", {}).get("metrics", [{}])[0].get("value", 0)
            ours.append((labels, float(pushed)))
    last = max((t for _, t in ours), default=0.0)
    wait = min(grace, last + grace - time.time())
    if ours and wait > 0:
        time.sleep(wait)
    for labels, _ in ours:
        delete_from_gateway(gateway, job=RESULTS_JOB, grouping_key=labels, timeout=timeout)
    return len(ours)


def default_run_id() -> str:
    return os.environ.get(ENV_RUN_ID) or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


class StageMetrics:
    """Metrics of one stage of one run (one Pushgateway group)."""

    def __init__(
        self,
        stage: str,
        method: str = "",
        run_id: str | None = None,
        gateway: str | None = None,
        push_interval: float | None = None,
        registry: CollectorRegistry | None = None,
        job: str = JOB,
        part: str = "",
    ):
        self.stage, self.method = stage, method or stage
        self.part = part  # a branch of a fan-out (scoring): its own Pushgateway group, label `part`
        self.run_id = run_id or default_run_id()
        self.gateway = gateway if gateway is not None else os.environ.get(ENV_GATEWAY, "")
        self.push_interval = (
            push_interval if push_interval is not None else float(os.environ.get("JESTFLOW_PUSH_INTERVAL", 15))
        )
        self.job = job
        self.registry = registry or CollectorRegistry()
        self._last_push = 0.0
        self._warned = False
        self._push_lock = threading.Lock()
        self._beat: threading.Event | None = None
        self._skipped = 0
        self._t0 = time.time()
        r, L = self.registry, LABELS
        g = lambda name, doc, extra=(): Gauge(name, doc, L + extra, registry=r)  # noqa: E731
        c = lambda name, doc: Counter(name, doc, L, registry=r)  # noqa: E731
        self.m = {
            "stage_running": g("jestflow_stage_running", "1 while the stage works, 0 once it ended"),
            "stage_duration": g("jestflow_stage_duration_seconds", "wall time of the stage so far"),
            "stage_progress": g("jestflow_stage_last_progress_timestamp_seconds", "Unix time of the last progress"),
            "step": g("jestflow_train_step", "optimiser steps done"),
            "loss": g("jestflow_train_loss", "training loss of the last step"),
            "grad_norm": g("jestflow_train_grad_norm", "gradient norm of the last step, before clipping"),
            "examples": c("jestflow_train_examples", "examples trained on"),
            "eps": g("jestflow_train_examples_per_second", "examples trained per second, last step"),
            "step_s": g("jestflow_train_step_seconds", "wall time of the last step"),
            "wait_s": g("jestflow_train_step_data_wait_seconds", "time the last step waited for data"),
            "wait_total": c("jestflow_train_data_wait_seconds", "time spent waiting for data"),
            "sel_s": g("jestflow_train_selection_seconds", "time the last step spent in joint selection"),
            "lr": g("jestflow_train_learning_rate", "learning rate of the last step"),
            "flops": c("jestflow_train_flops", "FLOPs spent by the stage (scoring, selection, training)"),
            "skipped": c("jestflow_skipped_samples", "bad samples skipped"),
            "chosen_l": g("jestflow_selection_chosen_learnability", "mean per-example score of the chosen sub-batch"),
            "super_l": g("jestflow_selection_superbatch_learnability", "mean per-example score of the super-batch"),
            "noisy": g(
                "jestflow_train_noisy_fraction", "fraction of trained examples whose recorded noise type is not clean"
            ),
            "scored": c("jestflow_scored_examples", "pool examples scored by the reference"),
            "eval": g("jestflow_eval_result", "evaluation result (ratio) by metric", ("metric",)),
            "gpu_mem": g("jestflow_gpu_memory_allocated_bytes", "CUDA memory allocated by torch"),
            "gpu_util": g("jestflow_gpu_utilization_ratio", "GPU utilisation, 0..1 (needs NVML)"),
            "push_fail": c("jestflow_push_failures", "pushes to the Pushgateway that failed"),
        }
        self.labels = {"run_id": self.run_id, "stage": self.stage, "method": self.method}
        for counter in ("push_fail", "skipped"):  # exported as 0 from the start, so an alert can see it rise
            self._l(counter)

    def _l(self, key):
        return self.m[key].labels(**self.labels)

    # ---- generic --------------------------------------------------------------------------------
    def start(self) -> None:
        self._t0 = time.time()
        self._l("stage_running").set(1)
        self._progress()
        self.push(force=True)
        if self.gateway and self._beat is None:
            self._beat = threading.Event()
            threading.Thread(target=self._heartbeat, args=(self._beat,), daemon=True, name="metrics-heartbeat").start()

    def _heartbeat(self, stop: threading.Event) -> None:
        """Push every `push_interval` seconds while the stage runs, progress or not."""
        while not stop.wait(max(self.push_interval, 0.05)):
            self._l("stage_duration").set(time.time() - self._t0)
            self.push(force=True)

    def _progress(self) -> None:
        self._l("stage_progress").set(time.time())
        self._l("stage_duration").set(time.time() - self._t0)

    def end(self) -> None:
        """The stage is over: stop the heartbeat, push the final values as the stage's result, and
        delete its live group from the gateway."""
        if self._beat is not None:
            self._beat.set()
            self._beat = None
        self._progress()
        self._l("stage_running").set(0)
        if self.push(force=True, job=RESULTS_JOB):
            self.delete()

    def delete(self) -> bool:
        if not self.gateway:
            return False
        with self._push_lock:
            try:
                delete_from_gateway(self.gateway, job=self.job, grouping_key=self._grouping_key(), timeout=3)
                return True
            except Exception as e:
                self._failed(e)
                return False

    def gpu(self) -> None:
        import torch

        if not torch.cuda.is_available():
            return
        self._l("gpu_mem").set(torch.cuda.memory_allocated())
        try:
            self._l("gpu_util").set(torch.cuda.utilization() / 100.0)
        except Exception:  # NVML missing: utilisation unknown, memory still reported
            pass

    # ---- training Callback ------------------------------------------------------------------------
    def on_start(self, stage: str, method: str) -> None:
        self.start()

    def on_step(self, stage: str, method: str, s: dict) -> None:
        self._l("step").set(s["step"])
        self._l("loss").set(s["loss"])
        self._l("grad_norm").set(s["grad_norm"])
        self._l("examples").inc(s["examples"])
        self._l("eps").set(s["examples_per_second"])
        self._l("step_s").set(s["step_seconds"])
        self._l("wait_s").set(s["data_wait_seconds"])
        self._l("wait_total").inc(s["data_wait_seconds"])
        self._l("sel_s").set(s["selection_seconds"])
        self._l("lr").set(s["lr"])
        self._l("flops").inc(s["flops"])
        self._skip(s["skipped"])
        if s.get("chosen_diag") is not None and s["chosen_diag"] == s["chosen_diag"]:  # not NaN
            self._l("chosen_l").set(s["chosen_diag"])
            self._l("super_l").set(s["pool_diag"])
        if s["noisy_fraction"] is not None and s["noisy_fraction"] == s["noisy_fraction"]:  # recorded (not NaN)
            self._l("noisy").set(s["noisy_fraction"])
        self.gpu()
        self._progress()
        self.push()

    def on_eval(self, stage: str, method: str, point: dict) -> None:
        self.evaluated(point)

    def on_end(self, stage: str, method: str, summary: dict) -> None:
        self.end()

    # ---- other stages ---------------------------------------------------------------------------
    def scored(self, n: int, skipped: int = 0) -> None:
        self._l("scored").inc(n)
        self._skip(skipped)
        self.gpu()
        self._progress()
        self.push()

    def evaluated(self, results: dict) -> None:
        for k in ("zeroshot_top1", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "retrieval_r1"):
            if isinstance(results.get(k), (int, float)) and results[k] == results[k]:  # not None, not NaN
                self.m["eval"].labels(**self.labels, metric=k).set(results[k])
        self._skip(sum((results.get("skipped") or {}).values()))
        self._progress()
        self.push()

    def _skip(self, so_far: int) -> None:
        """`so_far`: the stage's running count of skipped samples; the counter grows by the difference."""
        if so_far > self._skipped:
            self._l("skipped").inc(so_far - self._skipped)
            self._skipped = so_far

    # ---- reading and pushing --------------------------------------------------------------------
    def value(self, name: str, **extra) -> float | None:
        return self.registry.get_sample_value(name, {**self.labels, **extra})

    def push(self, force: bool = False, job: str | None = None) -> bool:
        if not self.gateway:
            return False
        now = time.monotonic()
        if not force and now - self._last_push < self.push_interval:
            return False
        self._last_push = now
        with self._push_lock:
            try:
                push_to_gateway(
                    self.gateway,
                    job=job or self.job,
                    registry=self.registry,
                    timeout=3,
                    grouping_key=self._grouping_key(),
                )
                return True
            except Exception as e:  # unreachable, refused, HTTP error: say it once, keep working
                self._failed(e)
                return False

    def _grouping_key(self) -> dict:
        key = {"run_id": self.run_id, "stage": self.stage, "method": self.method}
        return {**key, "part": self.part} if self.part else key

    def _failed(self, e: Exception) -> None:
        self._l("push_fail").inc()
        if not self._warned:
            self._warned = True
            log.warning(
                "metrics push to Pushgateway %s failed (%s); the %s stage goes on, its results are "
                "kept in its outputs; further push failures are counted silently",
                self.gateway,
                str(e).splitlines()[0][:200],
                self.stage,
            )
