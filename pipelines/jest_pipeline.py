"""The JEST pipeline: prepare -> reference -> score -> {curated learner, uniform x2} -> evaluate -> report.

Variants come from `build(gpu=..., multinode=...)`: the GPU ones for real clusters (training and
scoring request `accelerator_type` GPUs, tolerate its taint, select `gpu_node_selector` nodes, retry;
data and artifacts flow through the pipeline root and gs://, no volume claim) and a CPU one for kind
and local runs (no GPUs; the data claim `data_claim` mounted at /data holds the demo data). Only the
standard library and kfp are imported here, so the pipeline compiles without torch.

Caching: every step's inputs are pipeline parameters or outputs of cached steps, never a per-run
value, because KFP's cache key is every input parameter value and every input artifact's name
(kubeflow/pipelines backend/src/v2/cacheutils/cache.go, GenerateCacheKey). The run id reaches the
steps as an environment variable from their pod's `pipeline/runid` label instead (the API server
puts it on every pod: backend/src/apiserver/template/v2_template.go, SetPodMetadataLabels).
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Markdown, pipeline_channel

from jestflow_components.evaluate.component import evaluate
from jestflow_components.image import CPU_IMAGE, GPU_IMAGE
from jestflow_components.merge_scores.component import merge_scores
from jestflow_components.multinode.component import train_learner_multinode
from jestflow_components.prepare.component import prepare
from jestflow_components.report.component import report
from jestflow_components.score.component import score
from jestflow_components.train_learner.component import train_learner
from jestflow_components.train_reference.component import train_reference

DATA_CLAIM = "jestflow-data"  # manifests/components/data-claim; mounted by the CPU variant only
DATA_MOUNT = "/data"
RUN_ID_LABEL = "pipeline/runid"  # set on every pipeline pod by the KFP API server
ENV_FROM_POD = {  # env var -> downward-API field path (env vars may read single labels)
    "JESTFLOW_RUN_ID": f"metadata.labels['{RUN_ID_LABEL}']",
    "JESTFLOW_NAMESPACE": "metadata.namespace",
    "JESTFLOW_POD_NAME": "metadata.name",
    "JESTFLOW_POD_UID": "metadata.uid",
}
# Monitoring settings from the cluster's ConfigMap (manifests/base/config.yaml), as env vars: not pipeline
# inputs, so turning monitoring on or off leaves every cache key as it was. Optional: without the
# ConfigMap (or the key) a step pushes nothing.
CONFIG_MAP = "jestflow-config"
ENV_FROM_CONFIG = {"JESTFLOW_PUSHGATEWAY": "JESTFLOW_PUSHGATEWAY", "JESTFLOW_PUSH_INTERVAL": "JESTFLOW_PUSH_INTERVAL"}


def _register(task, *values) -> None:
    task.register_pipeline_channels([v for v in values if isinstance(v, pipeline_channel.PipelineChannel)])


def _common(task, cpu, memory, cache: bool, image, claim=None):
    """Image, requests (pipeline parameters or constants), caching, the pod's identity and the
    monitoring settings as env vars, and (CPU variant) the data claim."""
    task.set_container_image(image)  # the driver resolves a parameter at run time (v2/driver/resolve.go)
    task.set_cpu_request(cpu).set_memory_request(memory).set_caching_options(cache)
    # SDK 2.17.3 registers a channel given to set_container_image as a task input, but not one given to
    # set_cpu_request / set_memory_request / set_accelerator_type (kfp/dsl/pipeline_task.py): inside the
    # scoring ParallelFor the loop's sub-DAG then lacks the parameter and the driver cannot resolve it.
    _register(task, cpu, memory)
    for env, path in ENV_FROM_POD.items():
        kubernetes.use_field_path_as_env(task, env_name=env, field_path=path)
    kubernetes.use_config_map_as_env(task, CONFIG_MAP, ENV_FROM_CONFIG, optional=True)
    if claim is not None:
        kubernetes.mount_pvc(task, pvc_name=claim, mount_path=DATA_MOUNT)
    return task


def _accelerated(task, gpu, cpu, memory, cache: bool, image, claim=None):
    """`gpu`: None (CPU variant) or (accelerator_type, gpu_node_selector) pipeline parameters."""
    _common(task, cpu, memory, cache, image, claim)
    if gpu is not None:
        accelerator, node_selector = gpu
        task.set_accelerator_type(accelerator).set_accelerator_limit(1)
        _register(task, accelerator)
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        # `{}` by default: the GPU request alone schedules onto GPU nodes on GKE, EKS and GPU-operator
        # clusters alike; a label is a choice among them (GKE: cloud.google.com/gke-accelerator).
        kubernetes.add_node_selector_json(task, node_selector_json=node_selector)
        # GPU nodes are often preemptible: retry; training resumes from its last checkpoint.
        task.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2.0)
    return task


# The pipeline's parameters: name -> (type, default, the variants that have it). One table, so the
# three variants cannot drift apart; `build` gives each variant's function the signature KFP reads.
GPU, CPU, MULTI = "gpu", "cpu", "multinode"
ALL = (GPU, CPU, MULTI)
PARAMETERS = {
    "curated_uri": (str, "", ALL),
    "pool_uri": (str, "", ALL),
    "eval_uri": (str, "", ALL),
    "demo_dir": (str, "", ALL),  # "": the demo goes into prepare's artifact (pipeline root)
    "preset": (str, "demo", ALL),
    "model_size": (str, "", ALL),
    "reference_steps": (int, 0, ALL),
    "steps": (int, 0, ALL),
    "batch_size": (int, 0, ALL),
    "filter_ratio": (float, 0.0, ALL),
    "n_chunks": (int, 0, ALL),
    "method": (str, "jest", ALL),
    "seed": (int, 0, ALL),
    "overrides": (list, [], ALL),
    "check_data": (bool, False, ALL),  # read every shard first (`jestflow data check`); always for the demo
    "score_parts": (list, [0, 1, 2, 3], ALL),
    # a pretrained SigLIP to score with instead of training a reference: a folder, gs:// prefix or hub name
    # ("": train one); needs model.arch=hf-siglip in the overrides
    "reference_model": (str, "", ALL),
    # images and the training and scoring steps' requests: parameters the driver resolves at run time
    # (backend/src/v2/driver: resolvePodSpecInputRuntimeParameter for the image, getPodResource for requests)
    "image": (str, CPU_IMAGE, ALL),  # prepare, merge, evaluation, report and the multi-node launcher
    "train_image": (str, GPU_IMAGE, ALL),  # reference, scoring, learners (and the multi-node job's pods)
    "train_cpu": (str, "4", ALL),
    "train_memory": (str, "16Gi", ALL),
    "accelerator_type": (str, "nvidia.com/gpu", (GPU, MULTI)),
    "gpu_node_selector": (dict, {}, (GPU, MULTI)),
    "learner_nodes": (int, 2, (MULTI,)),
    "gpus_per_node": (int, 8, (MULTI,)),
    "job_kind": (str, "trainjob", (MULTI,)),  # or "pytorchjob" (Training Operator v1)
    "learner_claim": (str, "", (MULTI,)),  # a ReadWriteMany claim for the job's pods; "": none (gs:// data)
}
# the CPU variant: the demo on the data claim, its one image, and requests a laptop's kind node has room for
CPU_DEFAULTS = {"demo_dir": f"{DATA_MOUNT}/demo", "train_image": CPU_IMAGE, "train_cpu": "1", "train_memory": "4Gi"}
LIGHT = ("1", "2Gi")  # prepare, merge, evaluation, report, launcher: one CPU, 2 GiB in every variant
CPU_ONLY = {"data_claim": (str, DATA_CLAIM)}  # the claim mounted at /data


def signature(variant: str) -> list[tuple[str, type, object]]:
    """(name, type, default) of `variant`'s parameters, in order."""
    defaults = CPU_DEFAULTS if variant == CPU else {}
    out = [(n, t, defaults.get(n, d)) for n, (t, d, v) in PARAMETERS.items() if variant in v]
    if variant == CPU:
        out += [(n, t, d) for n, (t, d) in CPU_ONLY.items()]
    return out


def build(gpu: bool = True, multinode: bool = False, fixed_images: tuple[str, str] | None = None):
    """A pipeline variant: `gpu` for real clusters; `multinode`: the curated learner trains as a
    Kubeflow Trainer TrainJob (or Training Operator PyTorchJob) over `learner_nodes` x `gpus_per_node`
    ranks (needs a gs:// pipeline root or a ReadWriteMany claim; see docs/distributed.md).

    `fixed_images` = (image, train_image) writes the images into the spec instead of taking them from the
    `image` / `train_image` parameters: for KFP's local DockerRunner, which runs `container.image` as
    written (kfp 2.17 kfp/local/task_dispatcher.py) where a cluster's driver resolves the parameter."""
    import inspect

    variant = MULTI if multinode else (GPU if gpu else CPU)
    suffix = {GPU: "", CPU: "-cpu", MULTI: "-multinode"}[variant]
    params = signature(variant)

    def jest_pipeline(*args) -> NamedTuple("Outputs", summary=Artifact, report=Markdown, report_html=HTML):
        p = dict(zip([n for n, _, _ in params], args))  # this variant's parameters, as KFP passes them
        claim = p["data_claim"] if variant == CPU else None
        accel = (p["accelerator_type"], p["gpu_node_selector"]) if variant != CPU else None
        image, train_image = fixed_images or (p["image"], p["train_image"])
        light = {"cpu": LIGHT[0], "memory": LIGHT[1], "image": image, "claim": claim}
        heavy = {"cpu": p["train_cpu"], "memory": p["train_memory"], "image": train_image, "claim": claim}
        # A pure function of its parameters (the demo is seeded): cached, so later steps can hit too.
        prep = _common(prepare(**{k: p[k] for k in prepare.component_spec.inputs}), cache=True, **light)
        prep.set_display_name("prepare")
        cfg = prep.outputs["config"]
        # Expensive and deterministic given config and data: cached, so re-runs reuse the reference.
        # A pretrained `reference_model` is fetched by the same step instead of training one.
        ref = _accelerated(
            train_reference(config=cfg, curated_uri=prep.outputs["curated"], reference_model=p["reference_model"]),
            accel,
            cache=True,
            **heavy,
        ).set_display_name("reference (train, or fetch reference_model)")
        # Scoring fans out over pool shards, one branch per item of score_parts (branch p scores shards
        # p, p + n, p + 2n, ...), then the partial caches merge (an index naming the parts' score files).
        with dsl.ParallelFor(items=p["score_parts"], name="score-shards") as part:
            # The pool URI travels on the config artifact's metadata (see kfp_steps.prepare).
            part_task = _accelerated(
                score(config=cfg, reference=ref.outputs["reference"], part=part, parts=p["score_parts"]),
                accel,
                cache=True,
                **heavy,
            ).set_display_name("score pool shards")
        scr = _common(
            merge_scores(parts=dsl.Collected(part_task.outputs["scores"]), pool_uri=prep.outputs["pool"]),
            cache=True,
            **light,
        ).set_display_name("merge scores")
        data = {
            "config": cfg,
            "pool_uri": prep.outputs["pool"],
            "eval_uri": prep.outputs["eval"],
            "scores": scr.outputs["scores"],
            "reference": ref.outputs["reference"],
        }

        # Learners are the measurement: not cached, so each submitted run trains afresh. Three of them:
        # the chosen method, uniform at equal iterations, and uniform at equal total FLOPs.
        def learner(meth, match_flops_of, label: str):
            if variant == MULTI and label == "selected":
                # Only the launcher runs in the pipeline's pod: small requests, no GPU; the job's pods train.
                t = _common(
                    train_learner_multinode(
                        method=meth,
                        nodes=p["learner_nodes"],
                        gpus_per_node=p["gpus_per_node"],
                        image=train_image,
                        job_kind=p["job_kind"],
                        namespace="",
                        accelerator_type=p["accelerator_type"],
                        node_selector=p["gpu_node_selector"],
                        data_claim=p["learner_claim"],
                        **data,
                    ),
                    cache=False,
                    **{**light, "claim": None},
                ).set_display_name(f"learner: {label} (multi-node)")
            else:
                t = _accelerated(
                    train_learner(method=meth, match_flops_of=match_flops_of, **data), accel, cache=False, **heavy
                ).set_display_name(f"learner: {label}")
            # Pure function of the model: cached.
            e = _common(
                evaluate(config=cfg, model=t.outputs["model"], eval_uri=prep.outputs["eval"]), cache=True, **light
            ).set_display_name(f"evaluate: {label}")
            return t.outputs["model"], e.outputs["results"]

        method = p["method"]
        sel_m, sel_e = learner(method, "", "selected")
        uni_m, uni_e = learner("uniform", "", "uniform")
        fl_m, fl_e = learner("uniform", method, "uniform at equal FLOPs")  # matched to the selected method's compute
        rep = _common(
            report(
                method=method,
                jest_model=sel_m,
                jest_eval=sel_e,
                uniform_model=uni_m,
                uniform_eval=uni_e,
                uniform_flops_model=fl_m,
                uniform_flops_eval=fl_e,
                config=cfg,
                scores=scr.outputs["scores"],
                pool_uri=prep.outputs["pool"],
            ),
            cache=False,
            **light,
        ).set_display_name("report")
        outputs = NamedTuple("Outputs", summary=Artifact, report=Markdown, report_html=HTML)  # noqa: UP014 (KFP's form)
        return outputs(rep.outputs["summary"], rep.outputs["report"], rep.outputs["report_html"])

    # KFP reads the parameters from the signature and passes them positionally, in this order.
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    jest_pipeline.__signature__ = inspect.Signature(
        [inspect.Parameter(n, kind, default=d, annotation=t) for n, t, d in params],
        return_annotation=inspect.signature(jest_pipeline).return_annotation,
    )
    return dsl.pipeline(
        name=f"jestflow-jest{suffix}",
        description="JEST data curation: reference -> score -> joint-selection learner vs uniform -> "
        "evaluate -> report",
    )(jest_pipeline)


jest_pipeline = build(gpu=True)
jest_pipeline_cpu = build(gpu=False)
jest_pipeline_multinode = build(gpu=True, multinode=True)
