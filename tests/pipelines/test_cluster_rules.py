"""Issue 15: what a real cluster does with the compiled pipeline, encoded from the upstream sources.

No KFP backend can run here, so each test takes its rule from the backend's source (kubeflow/pipelines
at 2.17, read with `fetch`) or Kubernetes' documentation, names it, and checks the compiled YAML
against it. Each failed on the main before the fix (noted per test).
"""

import copy
import json
import re

import pytest
from tests.pipelines.test_compiled import TRAINING, containers, docs, executor, tasks

from jestflow.platform import kfp_steps
from jestflow_pipelines.compile import TARGETS

GPU_VARIANTS = ("jest_pipeline.yaml", "jest_pipeline_multinode.yaml")


def _executor_label(spec, task):
    return spec["components"][tasks(spec)[task]["componentRef"]["name"]]["executorLabel"]


# --- defect 1: GPU steps never scheduled on GKE --------------------------------------------------


@pytest.mark.parametrize("name", GPU_VARIANTS)
def test_gpu_node_selection_is_a_parameter_defaulting_to_none(fresh, name):
    """Was: every GPU step selected `nvidia.com/gpu.present=true`, a GPU Feature Discovery label GKE's
    node pools do not carry. Rule (kubeflow/pipelines backend/src/v2/driver/k8s.go, node selector
    block): a `nodeSelectorJson` input is resolved at run time and becomes the pod's nodeSelector, so
    `{}` means no constraint, and the GPU request alone places the pod on a GPU node."""
    spec, k8s = docs(fresh / name)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert (
        params["gpu_node_selector"]["parameterType"] == "STRUCT" and params["gpu_node_selector"]["defaultValue"] == {}
    )
    assert "gpu.present" not in json.dumps(k8s)
    gpu_tasks = [t for t in TRAINING if t in tasks(spec)]
    assert gpu_tasks
    for t in gpu_tasks:
        selector = k8s[_executor_label(spec, t)]["nodeSelector"]
        assert "labels" not in selector, t
        assert selector["nodeSelectorJson"]["componentInputParameter"].endswith("gpu_node_selector"), t


@pytest.mark.parametrize("name", GPU_VARIANTS)
def test_accelerator_type_is_a_parameter(fresh, name):
    """Rule (kubeflow/pipelines backend/src/v2/driver/driver.go: `resolvePodSpecInputRuntimeParameter`
    on `accelerator.GetResourceType()`): a resource type given as a placeholder of an input parameter is
    resolved per task, so the type (nvidia.com/gpu, amd.com/gpu, ...) can be chosen per run."""
    spec, _ = docs(fresh / name)
    assert spec["root"]["inputDefinitions"]["parameters"]["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"
    for t in (t for t in TRAINING if t in tasks(spec)):
        placeholder = executor(spec, t)["container"]["resources"]["accelerator"]["resourceType"]
        param = re.fullmatch(r"\{\{\$\.inputs\.parameters\['(.+)'\]\}\}", placeholder)
        assert param, placeholder
        assert tasks(spec)[t]["inputs"]["parameters"][param[1]]["componentInputParameter"].endswith("accelerator_type")


# --- defect 2: one ReadWriteOnce claim mounted by every parallel task ----------------------------


@pytest.mark.parametrize("name", GPU_VARIANTS)
def test_gpu_variants_mount_no_claim(fresh, name):
    """Was: every task mounted the ReadWriteOnce claim `jestflow-data`; a RWO volume attaches to one
    node (Kubernetes docs, Persistent Volumes, Access Modes: "ReadWriteOnce: the volume can be mounted
    as read-write by a single node"), so parallel scorers and learners on other nodes never started.
    Data and artifacts now flow through the pipeline root and gs://."""
    spec, k8s = docs(fresh / name)
    assert all("pvcMount" not in e for e in k8s.values())
    assert spec["root"]["inputDefinitions"]["parameters"]["demo_dir"]["defaultValue"] == ""


def test_cpu_variant_mounts_the_claim_named_by_a_parameter(fresh):
    spec, k8s = docs(fresh / "jest_pipeline_cpu.yaml")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["data_claim"]["defaultValue"] == "jestflow-data"
    for t in containers(spec):
        (mount,) = k8s[_executor_label(spec, t)]["pvcMount"]
        assert mount["mountPath"] == "/data" and mount["pvcNameParameter"]["componentInputParameter"].endswith(
            "data_claim"
        ), t


class _Art:
    def __init__(self, path, uri=None):
        self.path, self.uri, self.metadata = str(path), uri or str(path), {}


def test_prepare_writes_the_demo_into_its_artifact_without_a_claim(tmp_path):
    config, demo = _Art(tmp_path / "config"), _Art(tmp_path / "demo")
    knobs = dict(model_size="", reference_steps=0, steps=0, batch_size=0, filter_ratio=0.0, n_chunks=0, seed=0)
    uris = kfp_steps.prepare("", "", "", "", "smoke", overrides=[], config_out=config, demo_out=demo, **knobs)
    assert uris == tuple(f"{demo.uri}/{s}" for s in ("curated", "pool", "eval"))
    assert (tmp_path / "demo" / "pool").is_dir() and config.metadata["pool"] == uris[1]
    # A pipeline root later steps cannot read (KFP's default MinIO) is refused with what to do instead.
    minio = _Art(tmp_path / "demo2", "minio://mlpipeline/v2/artifacts/run/prepare/demo")
    with pytest.raises(ValueError, match=r"'minio://mlpipeline/v2/artifacts' is neither gs:// nor local"):
        kfp_steps.prepare("", "", "", "", "smoke", overrides=[], config_out=config, demo_out=minio, **knobs)


# --- defect 4: caching could never hit across runs ----------------------------------------------

RUN_PLACEHOLDERS = re.compile(r"\{\{\$\.(pipeline_job_uuid|pipeline_job_name|pipeline_task_uuid|pipeline_task_name)")


def cache_keys(spec, run: str, params: dict) -> dict:
    """The cache key KFP computes for each cached task in run `run` with pipeline parameters `params`,
    as kubeflow/pipelines backend/src/v2/cacheutils/cache.go `GenerateCacheKey` builds it: every input
    parameter's value, every input artifact's *name* (a new MLMD artifact per execution, so an
    artifact made by a step that ran in this run has a run-specific name, one taken from a cache hit
    keeps its name), output specs, image and command. A run placeholder resolves to the run's id."""
    all_tasks = tasks(spec)
    cached = {t for t, task in all_tasks.items() if task.get("cachingOptions", {}).get("enableCache")}

    def producer_cached(task: str) -> bool:
        dag = spec["components"][all_tasks[task]["componentRef"]["name"]].get("dag")
        if dag:  # a loop: its outputs are its body's
            return all(producer_cached(t) for t in dag["tasks"])
        return task in cached

    def resolve(value):
        if isinstance(value, dict):
            if "componentInputParameter" in value:
                name = value["componentInputParameter"].removeprefix("pipelinechannel--")
                return params.get(name.removesuffix("-loop-item"), name)
            if "runtimeValue" in value:
                return RUN_PLACEHOLDERS.sub("{{" + run, json.dumps(value["runtimeValue"]["constant"]))
            if "taskOutputParameter" in value:
                p = value["taskOutputParameter"]
                return f"{p['producerTask']}.{p['outputParameterKey']}" + (
                    "" if producer_cached(p["producerTask"]) else run
                )
            if "taskOutputArtifact" in value:
                a = value["taskOutputArtifact"]
                return f"{a['producerTask']}.{a['outputArtifactKey']}" + (
                    "" if producer_cached(a["producerTask"]) else run
                )
            if "componentInputArtifact" in value:
                return value["componentInputArtifact"]  # from the enclosing DAG: its producer is checked there
        return json.dumps(value, sort_keys=True)

    keys = {}
    for t in cached:
        task = all_tasks[t]
        ex = executor(spec, t)
        if ex is None:
            continue
        inputs = task.get("inputs", {})
        key = {
            "parameters": {k: resolve(v) for k, v in inputs.get("parameters", {}).items()},
            "artifacts": {k: resolve(v) for k, v in inputs.get("artifacts", {}).items()},
            "container": RUN_PLACEHOLDERS.sub("{{" + run, json.dumps(ex["container"], sort_keys=True)),
        }
        keys[t] = key
    return keys


@pytest.mark.parametrize("name", list(TARGETS))
def test_cached_steps_get_the_same_cache_key_in_two_runs(fresh, name):
    """Was: cached tasks took `run_id = {{$.pipeline_job_uuid}}` as an input parameter and consumed
    artifacts of the uncached `prepare`, so every run computed new keys for reference, scoring, merge
    and evaluation. Two runs of the same parameters must give every cached step the same key."""
    spec, _ = docs(fresh / name)
    params = {"preset": "demo", "steps": 100, "method": "jest"}
    a, b = cache_keys(spec, "run-a", params), cache_keys(spec, "run-b", params)
    assert {"prepare", "train-reference", "score", "merge-scores", "evaluate"} <= set(a)
    for t in a:
        if t.startswith("evaluate"):
            # The learners are not cached (each run trains afresh), so the model an evaluation reads is
            # new in every run by design; everything else it takes must not be.
            assert a[t]["artifacts"].pop("model") != b[t]["artifacts"].pop("model")
        assert a[t] == b[t], f"{t}: its cache key differs between two runs of the same parameters"
    # The model is not vacuous: a per-run input does change the key.
    mutated = copy.deepcopy(spec)
    tasks(mutated)["train-reference"]["inputs"]["parameters"]["pushgateway"] = {
        "runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}
    }
    ka, kb = cache_keys(mutated, "run-a", params), cache_keys(mutated, "run-b", params)
    assert ka["train-reference"] != kb["train-reference"]
    different = cache_keys(spec, "run-b", {**params, "steps": 200})
    assert different["prepare"] != a["prepare"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_run_id_reaches_every_step_from_its_pod_label(fresh, name):
    """Rule: the KFP API server labels every pod of a run `pipeline/runid=<run id>`
    (kubeflow/pipelines backend/src/apiserver/template/v2_template.go, `SetPodMetadataLabels(
    util.LabelKeyWorkflowRunId, ...)`; the key is in backend/src/common/util/consts.go), and the
    downward API gives a single label to an env var as `metadata.labels['<key>']` (Kubernetes docs,
    "Downward API": fieldRef, available as environment variable)."""
    spec, k8s = docs(fresh / name)
    for t in containers(spec):
        env = k8s[_executor_label(spec, t)]["fieldPathAsEnv"]
        assert {"name": "JESTFLOW_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"} in env, t
        assert "run_id" not in tasks(spec)[t].get("inputs", {}).get("parameters", {}), t
    assert "pipeline_job_uuid" not in (fresh / name).read_text()


def test_prepare_can_check_the_data_before_any_gpu_is_requested(tmp_path):
    """Issue 16: `prepare` runs `jestflow data check` on the run's splits (parameter check_data; always
    for the demo) and fails naming what a later stage would fail on."""
    import shutil

    config, demo = _Art(tmp_path / "config"), _Art(tmp_path / "demo")
    knobs = dict(model_size="", reference_steps=0, steps=0, batch_size=0, filter_ratio=0.0, n_chunks=0, seed=0)
    uris = kfp_steps.prepare("", "", "", "", "smoke", overrides=[], config_out=config, demo_out=demo, **knobs)
    pool = tmp_path / "mine" / "pool"
    shutil.copytree(uris[1], pool)
    shard = sorted(pool.glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:30_000])
    given = (uris[0], str(pool), uris[2])
    kfp_steps.prepare(*given, "", "smoke", overrides=[], config_out=config, **knobs)  # not asked: not checked
    with pytest.raises(ValueError, match=rf"data check failed: PROBLEM: {shard}: truncated tar"):
        kfp_steps.prepare(*given, "", "smoke", overrides=[], config_out=config, check_data=True, **knobs)


# --- issue 25: images, requests and monitoring settings ------------------------------------------------

PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['(.+)'\]\}\}")


def _resolves_to(spec, task, placeholder: str) -> str:
    """The root parameter a task's placeholder resolves to: the driver looks the placeholder's name up in the
    task's executor input (backend/src/v2/driver/resolve.go, resolvePodSpecInputRuntimeParameter: "executorInput
    did not contain container Image input parameter" otherwise), which holds the task's input parameters."""
    name = PLACEHOLDER.fullmatch(placeholder)
    assert name, placeholder
    return tasks(spec)[task]["inputs"]["parameters"][name[1]]["componentInputParameter"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_images_and_training_requests_are_parameters_the_driver_resolves(fresh, name):
    """Was: images hard-coded to ghcr.io/jestflow (never published) and 4 CPU / 16 Gi per step, which a
    laptop's kind node cannot schedule. Rules (backend/src/v2/driver at 2.17): the image goes through
    resolvePodSpecInputRuntimeParameter, requests through getPodResource (resourceCpuRequest /
    resourceMemoryRequest), both resolving `{{$.inputs.parameters[...]}}` from the executor input."""
    spec, _ = docs(fresh / name)
    params = spec["root"]["inputDefinitions"]["parameters"]
    for t in containers(spec):
        c = executor(spec, t)["container"]
        root = _resolves_to(spec, t, c["image"])
        assert root.endswith("train_image" if t in TRAINING else "image"), (t, root)
        if t in TRAINING:
            assert _resolves_to(spec, t, c["resources"]["resourceCpuRequest"]).endswith("train_cpu"), t
            assert _resolves_to(spec, t, c["resources"]["resourceMemoryRequest"]).endswith("train_memory"), t
        else:
            assert float(c["resources"]["resourceCpuRequest"]) <= 1, t
    if name == "jest_pipeline_cpu.yaml":  # kind-sized, and one image
        assert params["train_cpu"]["defaultValue"] == "1" and params["train_memory"]["defaultValue"] == "4Gi"
        assert params["train_image"]["defaultValue"] == params["image"]["defaultValue"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_monitoring_comes_from_the_configmap_not_the_cache_key(fresh, name):
    """Was: the Pushgateway URL was a pipeline input of every cached step, so turning monitoring on or off
    missed the cache (cacheutils/cache.go hashes every input parameter). Now every task maps it from the
    ConfigMap `jestflow-config` (optional: none, no pushes) into $JESTFLOW_PUSHGATEWAY."""
    spec, k8s = docs(fresh / name)
    assert "pushgateway" not in json.dumps(spec["root"]["inputDefinitions"])
    for t in containers(spec):
        (cm,) = k8s[_executor_label(spec, t)]["configMapAsEnv"]
        assert cm["configMapName"] == "jestflow-config" and cm["optional"] is True
        assert {"configMapKey": "JESTFLOW_PUSHGATEWAY", "envVar": "JESTFLOW_PUSHGATEWAY"} in cm["keyToEnv"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_parameter_a_task_reads_is_an_input_of_its_dag(fresh, name):
    """Found running the pipeline: SDK 2.17.3 registers a channel given to set_container_image as a task
    input but not one given to set_cpu_request / set_memory_request / set_accelerator_type
    (kfp/dsl/pipeline_task.py), so the scoring ParallelFor's sub-DAG lacked `train_cpu`: kfp.local
    stopped with "Parent pipeline input argument 'pipelinechannel--train_cpu' not found", and the
    cluster's driver resolves a task's componentInputParameter from its DAG's inputs the same way
    (backend/src/v2/driver/resolve.go, resolveInputs). Rule: every componentInputParameter a task maps is
    an input of the DAG that holds the task, and every placeholder its container uses is a task input."""
    spec, _ = docs(fresh / name)
    dags = {"root": spec["root"], **{k: c for k, c in spec["components"].items() if "dag" in c}}
    for dag_name, dag in dags.items():
        have = set(dag.get("inputDefinitions", {}).get("parameters", {}))
        for t, task in dag["dag"]["tasks"].items():
            for p, src in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in src:
                    assert src["componentInputParameter"] in have, (dag_name, t, p)
            ex = executor(spec, t)
            if ex is None:
                continue
            c = ex["container"]
            used = [
                c["image"],
                *c.get("resources", {}).values(),
                *c.get("resources", {}).get("accelerator", {}).values(),
            ]
            for placeholder in (u for u in used if isinstance(u, str) and u.startswith("{{$.inputs")):
                assert PLACEHOLDER.fullmatch(placeholder)[1] in task["inputs"]["parameters"], (dag_name, t, placeholder)
