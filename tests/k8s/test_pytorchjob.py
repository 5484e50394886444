"""The multi-node training component: the PyTorchJob it renders passes the CRD's schema and the policy,
and the component drives it through the real `kubernetes` client against a stand-in API server whose
stand-in operator runs the job's replicas as local torchrun processes (2 nodes x 1 CPU rank, gloo)."""

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from tests.k8s.fake_api import FakeCluster
from tests.k8s.pytorchjob_schema import errors

from jestflow import config as C
from jestflow import kfp_steps, pytorchjob, storage
from jestflow.model import load_model
from jestflow.selection import METHODS

IMAGE = "ghcr.io/jestflow/jestflow-cuda:0.1.0"


@dataclass
class Art:  # what a KFP artifact offers a component body
    path: str
    metadata: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def uri(self):
        return self.path

    def log_metric(self, k, v):
        self.metrics[k] = v


@pytest.fixture
def cluster():
    c = FakeCluster()
    yield c
    c.close()


@pytest.mark.parametrize("nodes,gpus", [(1, 0), (2, 1), (4, 8)])
def test_rendered_job_passes_the_crd_schema_and_policy(nodes, gpus):
    job = pytorchjob.render(
        pytorchjob.JobSpec(
            "jestflow-abc-jest", "kubeflow", IMAGE, ["-m", "jestflow", "train"], nodes=nodes, gpus_per_node=gpus
        )
    )
    assert errors(job) == []
    reps = job["spec"]["pytorchReplicaSpecs"]
    assert reps["Master"]["replicas"] == 1 and reps.get("Worker", {}).get("replicas", 0) == nodes - 1
    assert job["spec"]["nprocPerNode"] == str(max(1, gpus))
    for r in reps.values():
        pod = r["template"]["spec"]
        assert (
            pod["securityContext"]["runAsNonRoot"]
            and r["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "jestflow"
        )
        c = pod["containers"][0]
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert (
            (c["resources"].get("limits", {}).get("nvidia.com/gpu") == str(gpus))
            if gpus
            else "limits" not in c["resources"]
        )
        assert ("tolerations" in pod) == bool(gpus)


def test_schema_rejects_what_a_server_would():
    job = pytorchjob.render(pytorchjob.JobSpec("j", "kubeflow", IMAGE, []))
    job["spec"]["runPolicy"]["cleanPodPolicy"] = "Sometimes"
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "x"
    job["spec"]["pytorchReplicaSpecs"]["Chief"] = job["spec"]["pytorchReplicaSpecs"]["Master"]
    e = "\n".join(errors(job))
    assert "cleanPodPolicy" in e and "imagePullPolicyy" in e and "Chief" in e


def _learner_inputs(scored: Path, tmp: Path, steps: int):
    cfg = C.load_config(
        "smoke", None, [f"learner.steps={steps}", "learner.eval_every=0", "learner.threads=1", "learner.batch_size=16"]
    )
    cfg_file = tmp / "config.yaml"
    cfg_file.write_text(C.dump(cfg))
    return dict(
        config=Art(str(cfg_file)),
        pool_uri=str(scored / "data" / "pool"),
        eval_uri=str(scored / "data" / "eval"),
        scores=Art(str(scored / "scores")),
        reference=Art(str(scored / "ref")),
        model=Art(str(tmp / "model")),
        metrics=Art(str(tmp / "metrics")),
    )


def test_two_node_job_trains_through_the_kubernetes_client(smoke_scored, tmp_path, cluster):
    a = _learner_inputs(smoke_scored, tmp_path, 3)
    roots = (str(tmp_path), str(smoke_scored))
    job = dict(method="jest", nodes=2, gpus_per_node=0, image=IMAGE, namespace="team-a", run_id="run-1")

    def launch():
        return kfp_steps.train_learner_pytorchjob(**job, api=cluster.api(), poll_seconds=0.2, shared_roots=roots, **a)

    s = launch()
    assert s["world_size"] == 2 and s["steps"] == 3 and s["method"] == "jest"
    load_model(str(tmp_path / "model" / "model.pt"), "cpu")
    name = pytorchjob.job_name("run-1", "jest")
    assert a["model"].metadata["pytorchjob"] == name and a["model"].metadata["nodes"] == 2
    assert a["metrics"].metrics["steps"] == 3.0
    posts = [r for r in cluster.requests if r[0] == "POST"]
    assert len(posts) == 1 and posts[0][1] == "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"
    assert posts[0][2]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert any(r[0] == "GET" and r[1].endswith(f"/pytorchjobs/{name}") for r in cluster.requests)
    # A retried step adopts the job it started instead of failing on the existing name.
    shutil.rmtree(tmp_path / "metrics", ignore_errors=True)
    again = launch()
    assert again["steps"] == 3 and len([r for r in cluster.requests if r[0] == "POST"]) == 2
    assert len(cluster.jobs) == 1


def test_failed_job_surfaces_the_operators_reason(smoke_scored, tmp_path, cluster):
    a = _learner_inputs(smoke_scored, tmp_path, 2)
    a["config"].path = str(tmp_path / "missing.yaml")  # the pods fail: their config file does not exist
    with pytest.raises(
        pytorchjob.JobFailed,
        match=rf"PyTorchJob team-a/{pytorchjob.job_name('run-2', 'jest')} failed: PyTorchJobFailed: "
        r".*replica\(s\) failed.*kubectl -n team-a logs",
    ):
        kfp_steps.train_learner_pytorchjob(
            method="jest",
            nodes=2,
            gpus_per_node=0,
            image=IMAGE,
            namespace="team-a",
            run_id="run-2",
            api=cluster.api(),
            poll_seconds=0.2,
            shared_roots=(str(tmp_path), str(smoke_scored)),
            **a,
        )
    assert any("config file not found" in log or "no such file" in log for log in cluster.pod_logs.values())
    assert not storage.exists(str(tmp_path / "model" / "train.json"))


def test_invalid_job_is_rejected_with_the_servers_message(cluster):
    job = pytorchjob.render(pytorchjob.JobSpec("jestflow-bad", "team-a", IMAGE, []))
    job["spec"]["runPolicy"]["cleanPodPolicy"] = "Sometimes"
    with pytest.raises(ValueError, match="rejected by the API server: .*is invalid: spec.runPolicy.cleanPodPolicy"):
        pytorchjob.run(cluster.api(), job, poll_seconds=0.1, log=lambda m: None)


def test_artifacts_the_pods_cannot_reach_are_refused(smoke_scored, tmp_path, cluster):
    a = _learner_inputs(smoke_scored, tmp_path, 2)
    with pytest.raises(ValueError, match="config artifact lives at .* which the PyTorchJob's pods cannot reach"):
        kfp_steps.train_learner_pytorchjob(
            method="jest", nodes=2, gpus_per_node=0, image=IMAGE, namespace="x", api=cluster.api(), **a
        )
    assert cluster.requests == []


def test_template_is_policy_complete():
    t = yaml.safe_load((Path(pytorchjob.__file__).parent / "templates" / "pytorchjob.yaml").read_text())
    assert t["kind"] == "PyTorchJob" and t["spec"]["runPolicy"]["backoffLimit"] >= 1


@pytest.mark.parametrize("method", list(METHODS))
def test_job_names_fit_kubernetes_limits_for_every_method(method):
    """Issue 15 defect 7: `jestflow-<run uuid>-<method>` plus `-worker-0` passed 63 characters for most
    methods. The rule encoded: the Training Operator names replica pods and Services
    `<job>-<type>-<index>` (kubeflow/training-operator pkg/core/utils.go, GenGeneralName) and a Service
    name must be a DNS-1035 label of at most 63 characters (kubernetes/kubernetes
    pkg/apis/core/validation/validation.go, ValidateServiceName = NameIsDNS1035Label)."""
    run_id = "3f2b8c1e-5d4a-4b7e-9c21-7a6e5f4d3c2b"  # a KFP run uuid: 36 characters
    name = pytorchjob.job_name(run_id, method)
    for replica, index in (("master", 0), ("worker", 0), ("worker", 9998)):
        service = pytorchjob.replica_name(name, replica, index)
        assert len(service) <= 63 and pytorchjob.DNS1035.fullmatch(service), service
    pytorchjob.JobSpec(name=name, namespace="kubeflow", image=IMAGE, args=[], nodes=9999)  # validates
    assert name != pytorchjob.job_name("another-run", method)  # unique per run and method
    if method in ("flexi-jest", "independent", "easy-reference", "hard-learner", "offline-easy-reference"):
        old = f"jestflow-{run_id}-{method}"[:63]  # the previous naming: too long for these (the list)
        assert len(pytorchjob.replica_name(old, "worker", 0)) > 63
