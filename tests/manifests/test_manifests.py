"""Every overlay renders with `kubectl kustomize`, every object passes strict schema validation (core
kinds with kubernetes-validate, Prometheus Operator kinds with @kubernetes-models), and policy holds."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from jestflow.platform.training_jobs import TRAINER_ACCOUNT as TRAINER_SA
from jestflow_components.image import CPU_IMAGE

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
OVERLAYS = ["base", "overlays/kind", "overlays/gke-gpu"]
K8S_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def render(path: str) -> list[dict]:
    r = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests" / path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def node_validator():
    if shutil.which("node") is None or not (HERE / "node_modules").exists():
        if os.environ.get("CI"):
            pytest.fail("node or tests/manifests/node_modules missing: `make test` runs npm ci there")
        pytest.skip("node_modules not installed (make test installs them)")

    def validate(objs):
        r = subprocess.run(
            ["node", str(HERE / "validate_crds.mjs")], input=json.dumps(objs), capture_output=True, text=True, cwd=HERE
        )
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    return validate


def containers(obj):
    spec = obj.get("spec", {})
    if obj.get("kind") == "PyTorchJob":  # the Master's pod; Workers are copies of it (checked in tests/k8s)
        spec = spec["pytorchReplicaSpecs"]["Master"]
    if obj.get("kind") == "TrainJob":  # the runtime patch's pod, with the trainer's image and resources
        node = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        pod = node["template"]["spec"]["template"]["spec"]
        t = spec["trainer"]
        c = {**pod["containers"][0], "image": t["image"], "resources": t["resourcesPerNode"]}
        return pod, [c]
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get(
        "spec"
    )
    return (pod or {}), (pod or {}).get("containers", []) + (pod or {}).get("initContainers", [])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_strict_schema_validation(overlay, node_validator):
    objs = render(overlay)
    crds = [o for o in objs if o["kind"] in CRD_KINDS]
    for o in objs:
        if o["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)  # raises on any error or unknown field
    results = node_validator(crds) if crds else []
    assert [r for r in results if not r["ok"]] == []
    want = {"ServiceMonitor", "PrometheusRule"} if overlay == "overlays/gke-gpu" else set()
    assert len(results) == len(crds) and {r["kind"] for r in results} == want
    unvalidated = (
        {o["kind"] for o in objs}
        - CRD_KINDS
        - {
            "Namespace",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "PersistentVolumeClaim",
            "ConfigMap",
            "Service",
            "Deployment",
            "Job",
        }
    )
    assert unvalidated == set(), "a kind nobody validates"


def test_strict_validation_is_not_vacuous(node_validator):
    job = next(o for o in render("overlays/kind") if o["kind"] == "Job")
    job["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    rule = next(o for o in render("overlays/gke-gpu") if o["kind"] == "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = 5  # must be a duration string
    assert node_validator([rule])[0]["ok"] is False


def policy_violations(objs) -> list[str]:
    bad = []
    for o in objs:
        name = f"{o['kind']}/{o['metadata']['name']}"
        labels = o["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"):
            if key not in labels:
                bad.append(f"{name}: label {key} missing")
        pod, cs = containers(o)
        for c in cs:
            sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
            where = f"{name}/{c['name']}"
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                bad.append(f"{where}: not runAsNonRoot")
            if sc.get("privileged"):
                bad.append(f"{where}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad.append(f"{where}: allowPrivilegeEscalation not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                bad.append(f"{where}: root filesystem writable")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                bad.append(f"{where}: capabilities not all dropped")
            req = c.get("resources", {}).get("requests", {})
            if "cpu" not in req or "memory" not in req:
                bad.append(f"{where}: no cpu/memory requests")
            image = c["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                bad.append(f"{where}: image {image} has no pinned tag")
    return bad


@pytest.mark.parametrize("overlay", ["overlays/kind", "overlays/gke-gpu"])
def test_policy(overlay):
    assert policy_violations(render(overlay)) == []


def test_policy_check_catches_violations():
    dep = next(o for o in render("overlays/kind") if o["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["privileged"] = True
    c["image"] = "prom/pushgateway:latest"
    del c["resources"]["requests"]
    found = policy_violations([dep])
    assert any("privileged" in v for v in found) and any("pinned tag" in v for v in found)
    assert any("requests" in v for v in found)


def render_with(components: list[str], tmp_path) -> list[dict]:
    """The gke-gpu overlay plus opt-in components, as a user's own overlay would add them."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(ROOT / "manifests" / "overlays" / "gke-gpu", tmp_path)],
                "components": [os.path.relpath(ROOT / "manifests" / "components" / c, tmp_path) for c in components],
            }
        )
    )
    r = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def test_overlays_differ_where_they_should(tmp_path):
    """Issue 25: the gke overlay provisioned a 1 TiB Filestore claim (billed at its minimum) and a demo
    Job that the GPU variants never mount; both are opt-in components now. kind keeps the CPU
    variant's claim and the demo Job, in the locally built image."""
    kind, gke = render("overlays/kind"), render("overlays/gke-gpu")
    job = lambda objs: next(o for o in objs if o["kind"] == "Job")["spec"]["template"]["spec"]  # noqa: E731
    # kustomize needs the tags written out: they must be the package's version (jestflow.__version__)
    assert job(kind)["containers"][0]["image"] == CPU_IMAGE
    assert job(kind)["serviceAccountName"] == "jestflow-trainer"  # writes files: needs no API rights
    claim = lambda objs: next(o for o in objs if o["kind"] == "PersistentVolumeClaim")["spec"]  # noqa: E731
    assert claim(kind)["accessModes"] == ["ReadWriteOnce"]  # kind's local-path provisioner: RWO only
    assert {o["kind"] for o in gke} & {"Job", "PersistentVolumeClaim"} == set()
    for sa in (o for o in gke if o["kind"] == "ServiceAccount"):  # Workload Identity for both identities
        assert "iam.gke.io/gcp-service-account" in sa["metadata"]["annotations"], sa["metadata"]["name"]
    shared = render_with(["filestore-claim"], tmp_path)
    # GKE's Filestore CSI classes give ReadWriteMany (GKE docs, "Access Filestore instances with the
    # Filestore CSI driver": standard-rwx, premium-rwx, enterprise-rwx)
    assert claim(shared)["accessModes"] == ["ReadWriteMany"] and claim(shared)["storageClassName"].endswith("-rwx")
    assert {o["metadata"]["namespace"] for o in shared} == {"kubeflow"}
    with_demo = render_with(["data-claim"], tmp_path)  # its Job's image is named by the overlay's `images:`
    assert claim(with_demo)["accessModes"] == ["ReadWriteOnce"] and job(with_demo)["serviceAccountName"] == TRAINER_SA


def test_kind_overlay_needs_no_crds():
    """Issue 15 defect 5: `make kind-up` applied a ServiceMonitor and a PrometheusRule, whose CRDs a
    bare kind cluster does not have, so `kubectl apply -k` failed halfway. A kind cluster serves only
    Kubernetes' built-in API groups until something installs CRDs; the KFP install adds Argo's and
    KFP's own, not the Prometheus Operator's. Monitoring is now the opt-in component."""
    builtin = {"v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1", "policy/v1", "networking.k8s.io/v1"}
    assert {o["apiVersion"] for o in render("overlays/kind")} <= builtin
    assert {o["apiVersion"] for o in render("base")} <= builtin


def test_monitoring_component_carries_the_release_label():
    """kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules by
    `release: <Helm release>` (prometheus-community/helm-charts charts/kube-prometheus-stack/templates/
    prometheus/prometheus.yaml, serviceMonitorSelectorNilUsesHelmValues and ruleSelectorNilUsesHelmValues,
    true in values.yaml), in every namespace (serviceMonitorNamespaceSelector and ruleNamespaceSelector
    default to {}). Without the label it ignores them."""
    objs = [o for o in render("overlays/gke-gpu") if o["kind"] in CRD_KINDS]
    assert {o["kind"] for o in objs} == {"ServiceMonitor", "PrometheusRule"}
    for o in objs:
        assert o["metadata"]["labels"]["release"] == "kube-prometheus-stack", o["kind"]
    component = yaml.safe_load((ROOT / "manifests" / "components" / "monitoring" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"


def test_pushgateway_image_is_current():
    """Issue 15 defect 9: v1.5.1 (2022). v1.11.3 is the newest release tag of prometheus/pushgateway."""
    dep = next(o for o in render("base") if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "prom/pushgateway:v1.11.3"


@pytest.mark.parametrize("kind", ["trainjob", "pytorchjob"])
def test_the_training_job_the_pipeline_creates_passes_its_crd_schema_and_the_policy(kind):
    """The training jobs are not in the kustomize tree (the multi-node component creates them at run
    time): validated here with their CRDs' schemas and the same policy as every object."""
    from tests.k8s import pytorchjob_schema, trainjob_schema

    from jestflow.platform import training_jobs

    job = training_jobs.render(
        training_jobs.JobSpec(
            training_jobs.job_name("run", "jest"),
            "kubeflow",
            "ghcr.io/jestflow/jestflow-cuda:0.1.0",
            ["-m", "jestflow", "train"],
            nodes=4,
            gpus_per_node=8,
        ),
        kind,
    )
    assert {"trainjob": trainjob_schema, "pytorchjob": pytorchjob_schema}[kind].errors(job) == []
    assert {"app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"} <= set(
        job["metadata"]["labels"]
    )
    assert policy_violations([job]) == []


def test_kind_recipe_is_consistent():
    """What can be checked of `make kind-up/kind-run/kind-down` without Docker's kind: one cluster name,
    a pinned KFP version, the images the components name, and the overlay it applies."""
    cluster = yaml.safe_load((ROOT / "manifests" / "kind" / "cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    r = subprocess.run(["make", "-n", "kind-up", "kind-run", "kind-down"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    plan = r.stdout
    from jestflow_pipelines.jest_pipeline import signature

    assert "kind create cluster --config manifests/kind/cluster.yaml" in plan
    assert f"--name {cluster['name']}" in plan and f"kind delete cluster --name {cluster['name']}" in plan
    assert "?ref=2." in plan and "?ref=master" not in plan  # KFP pinned to a release
    # the CPU variant runs every step in one image (its `image` and `train_image` defaults): that is loaded
    images = {d for n, _, d in signature("cpu") if n in ("image", "train_image")}
    assert images == {CPU_IMAGE} and f"kind load docker-image --name {cluster['name']} $(IMAGE):$(VERSION)" not in plan
    assert f"kind load docker-image --name {cluster['name']} {CPU_IMAGE}" in plan
    assert "kubectl apply -k manifests/overlays/kind" in plan or "deploy OVERLAY=kind" in plan
    assert "jestflow submit --cpu" in plan


def test_kind_installs_the_kfp_backend_of_the_sdks_minor():
    """The SDK compiles what its backend release understands (kubeflow/pipelines publishes SDK and
    backend together: VERSION 2.17.0 at the SDK 2.17 line; manifests/kustomize/base/pipeline pins the
    2.17.0 images). The kind recipe installed 2.14.3 while constraints.txt pins kfp 2.17.3."""
    import re
    from importlib.metadata import version

    plan = subprocess.run(["make", "-n", "kind-up"], cwd=ROOT, capture_output=True, text=True).stdout
    backend = set(re.findall(r"\?ref=(\d+\.\d+)\.\d+", plan))
    sdk = ".".join(version("kfp").split(".")[:2])
    assert backend == {sdk}, (backend, sdk)


def test_kind_run_can_port_forward():
    """Issue 15 defect 6: cluster.yaml mapped host 127.0.0.1:8080 into the node, then `make kind-run`
    port-forwarded to the same local 8080, which the node's published port already held. Rule encoded:
    kind publishes each extraPortMappings hostPort on the host (kubernetes-sigs/kind
    pkg/apis/config/v1alpha4/types.go, PortMapping: "Port on the host"), and `kubectl port-forward
    svc/X LOCAL:REMOTE` listens on LOCAL on 127.0.0.1; two listeners cannot share a port. Also: a mapped
    node port must be one some Service of ours exposes."""
    import re

    cluster = yaml.safe_load((ROOT / "manifests" / "kind" / "cluster.yaml").read_text())
    mappings = [m for node in cluster["nodes"] for m in node.get("extraPortMappings", [])]
    host_ports = {m.get("hostPort") for m in mappings}
    plan = subprocess.run(["make", "-n", "kind-run"], cwd=ROOT, capture_output=True, text=True).stdout
    forwarded = {int(p) for p in re.findall(r"port-forward \S+ (\d+):\d+", plan)}
    assert forwarded, plan
    assert not host_ports & forwarded
    assert re.search(rf"--host http://127.0.0.1:{forwarded.pop()}\b", plan)  # submit goes where it forwards
    node_ports = {
        p.get("nodePort") for o in render("overlays/kind") if o["kind"] == "Service" for p in o["spec"].get("ports", [])
    }
    assert all(m["containerPort"] in node_ports for m in mappings)
