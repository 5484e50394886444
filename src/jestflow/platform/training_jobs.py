"""Multi-node training as a Kubernetes job: render a Kubeflow Trainer v2 TrainJob (the default) or a
Training Operator v1 PyTorchJob (clusters still on v1), create it with the `kubernetes` client,
wait for it, surface its failure, and delete it when the step that owns it is cancelled.

Both run `python -m torch.distributed.run -m jestflow train ...` (torchrun, see LAUNCHER) on every node;
the controller tells it the
rendezvous (PET_* variables) and jestflow's trainer does the rest (see training/distributed.py). All ranks
read and write through jestflow's storage layer, so artifacts must live where every pod reaches
them: gs:// URIs (a KFP pipeline root on GCS) or paths on a shared (ReadWriteMany) data claim.

Re-running a step whose job already exists (a retried KFP task) adopts that job instead of failing,
so a retry waits for the training it already started. The job carries an owner reference to the
launching pod (same namespace, as Kubernetes requires), so deleting that pod deletes the job; a
SIGTERM to the launcher deletes it at once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from importlib import resources

import yaml

GPU_RESOURCE = "nvidia.com/gpu"
# torchrun, as the image's own interpreter runs it. The `torchrun` script on PATH may belong to another
# Python: in the CUDA image (a venv over the base image's site-packages) it is the base image's
# /opt/conda/bin/torchrun, whose interpreter has no jestflow. `python` is the venv's (PATH starts with
# /opt/jestflow/bin), and torch.distributed.run is the module the `torchrun` script calls
# (torch/distributed/run.py), reading the same PET_* variables; Trainer's torch plugin injects those
# for any command but torchtune's (kubeflow/trainer v2.3.0 pkg/runtime/framework/plugins/torch/torch.go).
LAUNCHER = ("python", "-m", "torch.distributed.run")
DNS1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Kind:
    """What differs between the two job APIs, for creating, watching and describing a job."""

    kind: str
    group: str
    version: str
    plural: str
    done: str  # condition type of success
    failed: str  # condition type of failure
    job_label: str  # label on the job's pods, for `kubectl logs -l`
    needs: str  # what to install when the API is missing

    def where(self, ns: str, name: str) -> str:
        return f"{self.kind} {ns}/{name}"


TRAINJOB = Kind(
    "TrainJob",
    "trainer.kubeflow.org",
    "v1alpha1",
    "trainjobs",
    done="Complete",  # kubeflow/trainer pkg/apis/trainer/v1alpha1/trainjob_types.go: TrainJobComplete
    failed="Failed",
    job_label="jobset.sigs.k8s.io/jobset-name",  # the TrainJob's JobSet has the TrainJob's name
    needs="Kubeflow Trainer v2 (and its ClusterTrainingRuntime torch-distributed)",
)
PYTORCHJOB = Kind(
    "PyTorchJob",
    "kubeflow.org",
    "v1",
    "pytorchjobs",
    done="Succeeded",
    failed="Failed",
    job_label="training.kubeflow.org/job-name",
    needs="the Kubeflow Training Operator (v1)",
)
KINDS = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"job kind {name!r} is not one of {', '.join(KINDS)}") from None


@dataclass(frozen=True)
class Owner:
    """The pod a job belongs to (set from the downward API: metadata.name and metadata.uid)."""

    name: str
    uid: str

    def reference(self) -> dict:
        # No blockOwnerDeletion: setting it needs update rights on the pod's finalizers, which the
        # run's service account does not have (Kubernetes' OwnerReferencesPermissionEnforcement).
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}


TRAINER_ACCOUNT = "jestflow-trainer"  # what the jobs' pods run as: manifests/base/rbac.yaml, no rights, no token


@dataclass(frozen=True)
class JobSpec:
    name: str
    namespace: str
    image: str
    args: list  # the launcher's (torchrun's) arguments: ["-m", "jestflow", "train", ...]
    nodes: int = 2
    gpus_per_node: int = 1  # 0: CPU nodes, gloo backend
    cpu: str = "8"
    memory: str = "32Gi"
    data_claim: str = ""  # a ReadWriteMany claim mounted at /data on every node; "" for none (gs:// data)
    service_account: str = TRAINER_ACCOUNT
    accelerator: str = GPU_RESOURCE
    node_selector: dict = field(default_factory=dict)
    owner: Owner | None = None
    env: dict = field(default_factory=dict)
    runtime: str = "torch-distributed"  # TrainJob: the ClusterTrainingRuntime to run on

    def __post_init__(self):
        if self.nodes < 1:
            raise ValueError(f"nodes = {self.nodes} must be at least 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node = {self.gpus_per_node} must be 0 (CPU) or more")
        # The Training Operator names each replica's pod and Service `<job>-<replica type>-<index>`
        # (kubeflow/training-operator pkg/core/utils.go, GenGeneralName); Trainer v2's JobSet names its
        # Jobs `<job>-<replicated job>-<index>` (kubernetes-sigs/jobset). Kubernetes validates a Service
        # name as a DNS-1035 label: at most 63 characters, [a-z]([-a-z0-9]*[a-z0-9])?
        # (kubernetes/kubernetes pkg/apis/core/validation/validation.go, ValidateServiceName).
        last = self.nodes - 1
        for longest in (replica_name(self.name, "worker" if self.nodes > 1 else "master", last),
                        replica_name(self.name, "node", last)):  # fmt: skip
            if not self.name or not DNS1035.fullmatch(longest):
                raise ValueError(
                    f"job name {self.name!r} gives replica name {longest!r}: it must be a DNS-1035 label "
                    "of at most 63 characters (see job_name)"
                )


def replica_name(job: str, replica_type: str, index: int) -> str:
    """The name the controller gives replica `index` of `replica_type` (a pod/Service or a Job)."""
    return f"{job}-{replica_type.lower()}-{index}".replace("/", "-")


def job_name(run_id: str, method: str) -> str:
    """A job name unique per run and method whose replica names stay DNS-1035 labels: the method (at
    most 22 characters) and 10 hex digits of a hash of run id and method, 42 at most, leaving 21 for
    "-worker-<index>"."""
    digest = hashlib.sha256(f"{run_id}/{method}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9-]+", "-", method.lower()).strip("-")[:22].rstrip("-")
    return f"jestflow-{slug}-{digest}"


def _template(name: str) -> dict:
    return yaml.safe_load(resources.files("jestflow.platform").joinpath(f"templates/{name}.yaml").read_text())


def _pod(spec: JobSpec, pod: dict, container: dict) -> None:
    """What both job kinds share: the service account, the data claim, GPUs, scheduling."""
    pod["serviceAccountName"] = spec.service_account  # its own automountServiceAccountToken is false
    if spec.data_claim:
        pod["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": spec.data_claim}})
        container["volumeMounts"].append({"name": "data", "mountPath": "/data"})
    if spec.gpus_per_node:
        pod["tolerations"] = [{"key": spec.accelerator, "operator": "Exists", "effect": "NoSchedule"}]
    if spec.node_selector:
        pod["nodeSelector"] = {str(k): str(v) for k, v in spec.node_selector.items()}


def _resources(spec: JobSpec) -> dict:
    out = {"requests": {"cpu": spec.cpu, "memory": spec.memory}}
    if spec.gpus_per_node:
        gpus = str(spec.gpus_per_node)
        out["requests"][spec.accelerator] = gpus
        out["limits"] = {spec.accelerator: gpus}
    return out


def _metadata(spec: JobSpec, job: dict) -> None:
    job["metadata"].update(name=spec.name, namespace=spec.namespace)
    if spec.owner:
        job["metadata"]["ownerReferences"] = [spec.owner.reference()]


def render_pytorchjob(spec: JobSpec) -> dict:
    """The PyTorchJob object for `spec`: one Master and `nodes - 1` Workers, `gpus_per_node` ranks each."""
    job = _template("pytorchjob")
    _metadata(spec, job)
    job["spec"]["nprocPerNode"] = str(max(1, spec.gpus_per_node))
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]
    pod = master["template"]["spec"]
    c = pod["containers"][0]
    _pod(spec, pod, c)
    c["image"], c["command"], c["args"] = spec.image, list(LAUNCHER), [str(a) for a in spec.args]
    c["env"] += [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())]
    c["resources"] = _resources(spec)
    master["template"]["metadata"]["labels"] = {**job["metadata"]["labels"]}
    if spec.nodes > 1:
        worker = copy.deepcopy(master)
        worker["replicas"] = spec.nodes - 1
        job["spec"]["pytorchReplicaSpecs"]["Worker"] = worker
    return job


def render_trainjob(spec: JobSpec) -> dict:
    """The TrainJob object for `spec`: `nodes` nodes of the torch-distributed runtime, `gpus_per_node`
    ranks each; what the trainer fields cannot say (service account, volumes, security, scheduling)
    goes into a runtime patch of the runtime's `node` replicated job."""
    job = _template("trainjob")
    _metadata(spec, job)
    job["spec"]["runtimeRef"]["name"] = spec.runtime
    t = job["spec"]["trainer"]
    t.update(
        image=spec.image,
        command=[*LAUNCHER, *[str(a) for a in spec.args]],
        numNodes=spec.nodes,
        numProcPerNode=max(1, spec.gpus_per_node),
        resourcesPerNode=_resources(spec),
    )
    t["env"] += [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())]
    node = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = node["template"]["spec"]["template"]["spec"]
    _pod(spec, pod, pod["containers"][0])
    return job


RENDER = {"trainjob": render_trainjob, "pytorchjob": render_pytorchjob}


def render(spec: JobSpec, kind: str = "trainjob") -> dict:
    get_kind(kind)  # a clear error for an unknown kind
    return RENDER[kind](spec)


def kind_of(job: dict) -> Kind:
    for k in KINDS.values():
        if job.get("kind") == k.kind:
            return k
    raise ValueError(f"not a job jestflow runs: kind {job.get('kind')!r}")


class JobFailed(RuntimeError):
    pass


def state(job: dict) -> tuple[str, str, str]:
    """(type, reason, message) of the job's latest true condition; ("Pending", "", "") before any."""
    conds = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    if not conds:
        return "Pending", "", ""
    c = conds[-1]
    return c["type"], c.get("reason", ""), c.get("message", "")


class DeleteOnTerm:
    """While active, SIGTERM (a cancelled KFP run stopping the launcher) deletes the job, then exits
    with 143 (128 + SIGTERM) as a terminated process does."""

    def __init__(self, api, kind: Kind, ns: str, name: str, log=print):
        self.api, self.kind, self.ns, self.name, self.log = api, kind, ns, name, log
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)

    def _on_term(self, signum, frame):
        self.log(f"{self.kind.where(self.ns, self.name)}: SIGTERM, deleting the job")
        delete(self.api, self.kind, self.ns, self.name, log=self.log)
        raise SystemExit(128 + signal.SIGTERM)


def delete(api, kind: Kind, ns: str, name: str, log=print) -> None:
    """Delete the job and, in the foreground, its pods; a job already gone is fine."""
    from kubernetes.client.rest import ApiException

    try:
        api.delete_namespaced_custom_object(
            kind.group, kind.version, ns, kind.plural, name, body={"propagationPolicy": "Foreground"}
        )
        log(f"{kind.where(ns, name)}: deleted")
    except ApiException as e:
        if e.status != 404:
            log(f"{kind.where(ns, name)}: delete failed ({e.status} {_message(e)}); delete it by hand")


def run(api, job: dict, poll_seconds: float = 15.0, timeout_seconds: float | None = None, log=print) -> dict:
    """Create `job` (or adopt the one of that name) and wait until it succeeds; raise `JobFailed`
    with the controller's reason and message when it fails, `TimeoutError` when it takes too long.
    A SIGTERM meanwhile deletes the job.

    `api` is a `kubernetes.client.CustomObjectsApi`."""
    from kubernetes.client.rest import ApiException

    k = kind_of(job)
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    where = k.where(ns, name)
    try:
        api.create_namespaced_custom_object(k.group, k.version, ns, k.plural, job)
        log(f"{where}: created")
    except ApiException as e:
        if e.status == 409:
            log(f"{where}: exists already; waiting for it (a retried step adopts its job)")
        elif e.status in (400, 422):
            raise ValueError(f"{where} was rejected by the API server: {_message(e)}") from None
        elif e.status == 404:
            raise RuntimeError(
                f"{where}: the API has no {k.plural}.{k.group}/{k.version}; is {k.needs} installed?"
            ) from None
        elif e.status == 403:
            raise RuntimeError(
                f"{where}: forbidden ({_message(e)}); apply manifests/base (Role jestflow-runner) "
                "and submit the run with --service-account jestflow-runner"
            ) from None
        else:
            raise
    t0, last = time.monotonic(), None
    with DeleteOnTerm(api, k, ns, name, log):
        while True:
            obj = api.get_namespaced_custom_object(k.group, k.version, ns, k.plural, name)
            kind, reason, message = state(obj)
            if kind != last:
                log(f"{where}: {kind}" + (f" ({reason}: {message})" if reason or message else ""))
                last = kind
            if kind == k.done:
                return obj
            if kind == k.failed:
                raise JobFailed(
                    f"{where} failed: {reason or 'no reason given'}: {message or 'no message'}. "
                    f"Logs: kubectl -n {ns} logs -l {k.job_label}={name} --all-containers"
                )
            if timeout_seconds is not None and time.monotonic() - t0 > timeout_seconds:
                raise TimeoutError(
                    f"{where} did not finish within {timeout_seconds:.0f} s (last state {kind}); "
                    f"it is still there: kubectl -n {ns} get {k.plural} {name}"
                )
            time.sleep(poll_seconds)


def _message(e) -> str:
    try:
        return json.loads(e.body).get("message", e.reason)
    except (TypeError, ValueError):
        return str(e.reason)


def current_namespace(default: str = "kubeflow") -> str:
    """The namespace this pod runs in ($JESTFLOW_NAMESPACE, set by the pipeline from the pod's own
    metadata; else its service account's), else `default`."""
    if os.environ.get("JESTFLOW_NAMESPACE"):
        return os.environ["JESTFLOW_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or default
    except OSError:
        return default


def current_pod() -> Owner | None:
    """This pod ($JESTFLOW_POD_NAME / $JESTFLOW_POD_UID from the downward API), or None off-cluster."""
    name, uid = os.environ.get("JESTFLOW_POD_NAME", ""), os.environ.get("JESTFLOW_POD_UID", "")
    return Owner(name, uid) if name and uid else None
