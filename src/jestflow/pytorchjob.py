"""Multi-node training through the Kubeflow Training Operator: render a PyTorchJob, create it with the
`kubernetes` client, wait for it, and surface its failure.

The job runs `torchrun -m jestflow train ...` on every node; the operator tells torchrun the
rendezvous (PET_* variables), and jestflow's trainer does the rest (see distributed.py). All ranks
read and write through jestflow's storage layer, so artifacts must live where every pod reaches
them: gs:// URIs (a KFP pipeline root on GCS) or paths on the shared data volume.

Re-running a step whose job already exists (a retried KFP task) adopts that job instead of failing,
so a retry waits for the training it already started.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field
from importlib import resources

import yaml

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")


@dataclass(frozen=True)
class JobSpec:
    name: str
    namespace: str
    image: str
    args: list  # torchrun's arguments: ["-m", "jestflow", "train", ...]
    nodes: int = 2
    gpus_per_node: int = 1  # 0: CPU nodes, gloo backend
    cpu: str = "8"
    memory: str = "32Gi"
    data_pvc: str = "jestflow-data"
    service_account: str = "jestflow-runner"
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.nodes < 1:
            raise ValueError(f"nodes = {self.nodes} must be at least 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node = {self.gpus_per_node} must be 0 (CPU) or more")
        # The Training Operator names each replica's pod and Service `<job>-<replica type>-<index>`
        # (kubeflow/training-operator pkg/core/utils.go, GenGeneralName), and Kubernetes validates a
        # Service name as a DNS-1035 label: at most 63 characters, [a-z]([-a-z0-9]*[a-z0-9])?
        # (kubernetes/kubernetes pkg/apis/core/validation/validation.go, ValidateServiceName).
        longest = replica_name(self.name, "worker" if self.nodes > 1 else "master", self.nodes - 1)
        if not self.name or not DNS1035.fullmatch(longest):
            raise ValueError(
                f"job name {self.name!r} gives replica Service name {longest!r}: it must be a DNS-1035 label "
                "of at most 63 characters (see job_name)"
            )


DNS1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def replica_name(job: str, replica_type: str, index: int) -> str:
    """The pod and Service name the Training Operator gives replica `index` of `replica_type`."""
    return f"{job}-{replica_type.lower()}-{index}".replace("/", "-")


def job_name(run_id: str, method: str) -> str:
    """A job name unique per run and method whose replica Service names stay DNS-1035 labels: the
    method (at most 22 characters) and 10 hex digits of a hash of run id and method, 42 at most,
    leaving 21 for "-worker-<index>"."""
    import hashlib

    digest = hashlib.sha256(f"{run_id}/{method}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9-]+", "-", method.lower()).strip("-")[:22].rstrip("-")
    return f"jestflow-{slug}-{digest}"


def template() -> dict:
    return yaml.safe_load(resources.files("jestflow").joinpath("templates/pytorchjob.yaml").read_text())


def render(spec: JobSpec) -> dict:
    """The PyTorchJob object for `spec`: one Master and `nodes - 1` Workers, `gpus_per_node` ranks each."""
    job = template()
    job["metadata"].update(name=spec.name, namespace=spec.namespace)
    job["spec"]["nprocPerNode"] = str(max(1, spec.gpus_per_node))
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]
    pod = master["template"]["spec"]
    pod["serviceAccountName"] = spec.service_account
    pod["volumes"][0]["persistentVolumeClaim"]["claimName"] = spec.data_pvc
    c = pod["containers"][0]
    c["image"], c["args"] = spec.image, [str(a) for a in spec.args]
    c["env"] += [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())]
    c["resources"]["requests"].update(cpu=spec.cpu, memory=spec.memory)
    if spec.gpus_per_node:
        gpus = str(spec.gpus_per_node)
        c["resources"]["requests"]["nvidia.com/gpu"] = gpus
        c["resources"]["limits"]["nvidia.com/gpu"] = gpus
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        pod["nodeSelector"] = {GPU_NODE_LABEL[0]: GPU_NODE_LABEL[1]}
    else:
        del c["resources"]["limits"]
    master["template"]["metadata"]["labels"] = {**job["metadata"]["labels"]}
    if spec.nodes > 1:
        worker = copy.deepcopy(master)
        worker["replicas"] = spec.nodes - 1
        job["spec"]["pytorchReplicaSpecs"]["Worker"] = worker
    return job


class JobFailed(RuntimeError):
    pass


def state(job: dict) -> tuple[str, str, str]:
    """(type, reason, message) of the job's latest true condition; ("Pending", "", "") before any."""
    conds = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    if not conds:
        return "Pending", "", ""
    c = conds[-1]
    return c["type"], c.get("reason", ""), c.get("message", "")


def run(api, job: dict, poll_seconds: float = 15.0, timeout_seconds: float | None = None, log=print) -> dict:
    """Create `job` (or adopt the one of that name) and wait until it succeeds; raise `JobFailed`
    with the operator's reason and message when it fails, `TimeoutError` when it takes too long.

    `api` is a `kubernetes.client.CustomObjectsApi`."""
    from kubernetes.client.rest import ApiException

    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    where = f"PyTorchJob {ns}/{name}"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job)
        log(f"{where}: created ({len(job['spec']['pytorchReplicaSpecs'])} replica groups)")
    except ApiException as e:
        if e.status == 409:
            log(f"{where}: exists already; waiting for it (a retried step adopts its job)")
        elif e.status in (400, 422):
            raise ValueError(f"{where} was rejected by the API server: {_message(e)}") from None
        elif e.status == 404:
            raise RuntimeError(
                f"{where}: the API has no {PLURAL}.{GROUP}/{VERSION}; is the Kubeflow Training Operator installed?"
            ) from None
        elif e.status == 403:
            raise RuntimeError(
                f"{where}: forbidden ({_message(e)}); apply manifests/base (Role jestflow-runner) "
                "and run the step as that service account"
            ) from None
        else:
            raise
    t0, last = time.monotonic(), None
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        kind, reason, message = state(obj)
        if kind != last:
            log(f"{where}: {kind}" + (f" ({reason}: {message})" if reason or message else ""))
            last = kind
        if kind == "Succeeded":
            return obj
        if kind == "Failed":
            raise JobFailed(
                f"{where} failed: {reason or 'no reason given'}: {message or 'no message'}. "
                f"Logs: kubectl -n {ns} logs -l training.kubeflow.org/job-name={name} --all-containers"
            )
        if timeout_seconds is not None and time.monotonic() - t0 > timeout_seconds:
            raise TimeoutError(
                f"{where} did not finish within {timeout_seconds:.0f} s (last state {kind}); "
                f"it is still there: kubectl -n {ns} get pytorchjob {name}"
            )
        time.sleep(poll_seconds)


def _message(e) -> str:
    import json

    try:
        return json.loads(e.body).get("message", e.reason)
    except (TypeError, ValueError):
        return str(e.reason)


def current_namespace(default: str = "kubeflow") -> str:
    """The namespace this pod runs in ($JESTFLOW_NAMESPACE, set by the pipeline from the pod's own
    metadata; else its service account's), else `default`."""
    import os

    if os.environ.get("JESTFLOW_NAMESPACE"):
        return os.environ["JESTFLOW_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or default
    except OSError:
        return default
