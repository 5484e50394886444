"""The compiled pipeline: kept identical to its source, and shaped as a cluster needs it."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jestflow import __version__
from jestflow_pipelines.compile import TARGETS

ROOT = Path(__file__).resolve().parents[2]
COMPILED = ROOT / "pipelines" / "compiled"


def docs(path):
    with open(path) as f:
        spec, platform = list(yaml.safe_load_all(f))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_committed_yaml_matches_source(fresh, name):
    assert (COMPILED / name).exists(), f"run `make compile`: {name} is missing"
    assert filecmp.cmp(fresh / name, COMPILED / name, shallow=False), (
        f"pipelines/compiled/{name} is stale: run `make compile`"
    )


def tasks(spec):
    """Every task, the ones inside loops (ParallelFor sub-DAGs) included."""
    out = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        out.update(comp.get("dag", {}).get("tasks", {}))
    return out


def executor(spec, task_name):
    comp = tasks(spec)[task_name]["componentRef"]["name"]
    if "dag" in spec["components"][comp]:
        return None  # a loop: no container of its own
    return spec["deploymentSpec"]["executors"][spec["components"][comp]["executorLabel"]]


def containers(spec):
    return {t: task for t, task in tasks(spec).items() if executor(spec, t) is not None}


TRAINING = ["train-reference", "score", "train-learner", "train-learner-2", "train-learner-3"]


def test_gpu_variant_requests_gpus_on_training_and_scoring(fresh):
    spec, k8s = docs(fresh / "jest_pipeline.yaml")
    for t in TRAINING:
        res = executor(spec, t)["container"]["resources"]
        assert res["accelerator"]["resourceCount"] == "1", t
        ex = spec["components"][tasks(spec)[t]["componentRef"]["name"]]["executorLabel"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[ex]["tolerations"]
        assert tasks(spec)[t]["retryPolicy"]["maxRetryCount"] == 3
    for t in ("prepare", "merge-scores", "evaluate", "report"):
        assert "accelerator" not in executor(spec, t)["container"].get("resources", {}), t


def test_cpu_variant_requests_no_gpu(fresh):
    spec, k8s = docs(fresh / "jest_pipeline_cpu.yaml")
    for t in containers(spec):
        assert "accelerator" not in executor(spec, t)["container"].get("resources", {}), t
    assert all("tolerations" not in e and "nodeSelector" not in e for e in k8s.values())


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_task_sets_requests_and_chooses_caching(fresh, name):
    spec, k8s = docs(fresh / name)
    for t, task in containers(spec).items():
        res = executor(spec, t)["container"]["resources"]  # constants, or a parameter's placeholder
        assert res["resourceCpuRequest"] and res["resourceMemoryRequest"], t
        assert "cachingOptions" in task, t
    caching = {t: task["cachingOptions"].get("enableCache", False) for t, task in containers(spec).items()}
    assert caching["prepare"] and caching["train-reference"] and caching["score"] and caching["merge-scores"]
    assert caching["evaluate"] and not caching["train-learner"] and not caching["report"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_images_are_versioned_and_nothing_is_pip_installed(fresh, name):
    """Images are the parameters `image` and `train_image` (test_cluster_rules checks the driver resolves
    them); their defaults carry the package's version."""
    spec, _ = docs(fresh / name)
    params = spec["root"]["inputDefinitions"]["parameters"]
    for p in ("image", "train_image"):
        assert params[p]["defaultValue"].endswith(f":{__version__}"), p
    for label, ex in spec["deploymentSpec"]["executors"].items():
        c = ex["container"]
        assert c["image"].startswith("{{$.inputs.parameters[") and ":latest" not in c["image"], label
        assert "pip install" not in " ".join(c.get("command", []) + c.get("args", [])), label


def test_scoring_output_feeds_the_learners(fresh):
    spec, _ = docs(fresh / "jest_pipeline.yaml")
    for t in ("train-learner", "train-learner-2", "train-learner-3"):
        scores = tasks(spec)[t]["inputs"]["artifacts"]["scores"]["taskOutputArtifact"]
        assert scores == {"outputArtifactKey": "scores", "producerTask": "merge-scores"}
        assert (
            tasks(spec)[t]["inputs"]["artifacts"]["reference"]["taskOutputArtifact"]["producerTask"]
            == "train-reference"
        )
    assert tasks(spec)["score"]["inputs"]["artifacts"]["reference"]["componentInputArtifact"].startswith(
        "pipelinechannel--train-reference"
    )


def test_scoring_fans_out_over_shards_and_merges(fresh):
    spec, _ = docs(fresh / "jest_pipeline.yaml")
    name, loop = next((n, t) for n, t in tasks(spec).items() if "parameterIterator" in t)
    assert loop["taskInfo"]["name"] == "score-shards"
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--score_parts"
    assert spec["root"]["inputDefinitions"]["parameters"]["score_parts"]["defaultValue"] == [0, 1, 2, 3]
    assert (
        tasks(spec)["score"]["inputs"]["parameters"]["part"]["componentInputParameter"]
        == "pipelinechannel--score_parts-loop-item"
    )
    merged = tasks(spec)["merge-scores"]["inputs"]["artifacts"]["parts"]
    assert merged["taskOutputArtifact"]["producerTask"] == name
    rep = tasks(spec)["report"]["inputs"]["artifacts"]
    assert {a["taskOutputArtifact"]["producerTask"] for a in rep.values()} >= {"evaluate", "evaluate-2", "evaluate-3"}


def test_parameters_cover_the_knobs(fresh):
    spec, _ = docs(fresh / "jest_pipeline.yaml")
    params = spec["root"]["inputDefinitions"]["parameters"]
    for p in (
        "curated_uri",
        "pool_uri",
        "eval_uri",
        "model_size",
        "steps",
        "batch_size",
        "filter_ratio",
        "n_chunks",
        "method",
        "seed",
        "preset",
    ):
        assert p in params, p
    assert params["filter_ratio"]["parameterType"] == "NUMBER_DOUBLE"
    assert params["steps"]["parameterType"] == "NUMBER_INTEGER"
    methods = {
        t: task["inputs"]["parameters"]["method"] for t, task in tasks(spec).items() if t.startswith("train-learner")
    }
    assert methods["train-learner"] == {"componentInputParameter": "method"}
    assert methods["train-learner-2"]["runtimeValue"]["constant"] == "uniform"


@pytest.mark.parametrize("name", list(TARGETS))
def test_a_pretrained_reference_is_a_parameter_of_the_reference_step(fresh, name):
    """reference_model ("" by default: train one) reaches the reference step, which fetches the model
    instead of training when it is set; everything downstream reads that step's artifact either way."""
    spec, _ = docs(fresh / name)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["reference_model"]["defaultValue"] == "" and params["reference_model"]["parameterType"] == "STRING"
    ref = tasks(spec)["train-reference"]
    assert ref["inputs"]["parameters"]["reference_model"] == {"componentInputParameter": "reference_model"}


def test_make_compile_is_what_wrote_them():
    """`python -m jestflow_pipelines.compile DIR` (what `make compile` runs) writes both files."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-m", "jestflow_pipelines.compile", d], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(d)) == sorted(TARGETS)


@pytest.mark.parametrize("name", list(TARGETS))
def test_no_secrets_in_the_compiled_pipeline(fresh, name):
    text = (fresh / name).read_text()
    for needle in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "private_key",
        "BEGIN PRIVATE KEY",
        "client_secret",
        "AWS_SECRET",
        "password",
        "token:",
    ):
        assert needle not in text, needle
    spec, k8s = docs(fresh / name)
    assert all("secretAsEnv" not in e and "secretAsVolume" not in e for e in k8s.values())


def test_multinode_variant_trains_the_curated_learner_as_a_cluster_job(fresh):
    spec, k8s = docs(fresh / "jest_pipeline_multinode.yaml")
    comp = tasks(spec)["train-learner-multinode"]["componentRef"]["name"]
    ins = tasks(spec)["train-learner-multinode"]["inputs"]["parameters"]
    assert ins["nodes"] == {"componentInputParameter": "learner_nodes"}
    assert ins["job_kind"] == {"componentInputParameter": "job_kind"}
    assert spec["root"]["inputDefinitions"]["parameters"]["job_kind"]["defaultValue"] == "trainjob"
    assert ins["node_selector"] == {"componentInputParameter": "gpu_node_selector"}
    assert ins["image"] == {"componentInputParameter": "train_image"}  # the job's pods run the training image
    assert spec["root"]["inputDefinitions"]["parameters"]["train_image"]["defaultValue"].endswith(
        f"-cuda:{__version__}"
    )
    assert "accelerator" not in executor(spec, "train-learner-multinode")["container"].get("resources", {})
    env = k8s[spec["components"][comp]["executorLabel"]]["fieldPathAsEnv"]
    for name, path in (("JESTFLOW_NAMESPACE", "metadata.namespace"), ("JESTFLOW_POD_UID", "metadata.uid")):
        assert {"name": name, "fieldPath": path} in env  # the job's namespace and its owner reference
    # The two uniform baselines still train in-pipeline; every learner feeds an evaluation.
    assert {"train-learner", "train-learner-2"} <= set(tasks(spec)) and "train-learner-3" not in tasks(spec)
