"""The JEST pipeline: prepare -> reference -> score -> {curated learner, uniform x2} -> evaluate -> report.

Two compiled variants come from `build(gpu=...)`: the GPU one for real clusters (training and
scoring request `nvidia.com/gpu`, tolerate GPU taints, select GPU nodes, retry) and a CPU one for
kind. Only the standard library and kfp are imported here, so the pipeline compiles without torch.
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Markdown

from jestflow_components.evaluate.component import evaluate
from jestflow_components.image import GPU_IMAGE
from jestflow_components.merge_scores.component import merge_scores
from jestflow_components.prepare.component import prepare
from jestflow_components.pytorchjob.component import train_learner_pytorchjob
from jestflow_components.report.component import report
from jestflow_components.score.component import score
from jestflow_components.train_learner.component import train_learner
from jestflow_components.train_reference.component import train_reference

DATA_PVC = "jestflow-data"  # created by manifests/base; holds demo data and local-path datasets
DATA_MOUNT = "/data"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set by NVIDIA GPU feature discovery


def _common(task, cpu: str, memory: str, cache: bool):
    task.set_cpu_request(cpu).set_memory_request(memory).set_caching_options(cache)
    kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=DATA_MOUNT)
    return task


def _accelerated(task, gpu: bool, cpu: str, memory: str, cache: bool):
    _common(task, cpu, memory, cache)
    if gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
        # GPU nodes are often preemptible: retry; training resumes from its last checkpoint.
        task.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2.0)
    return task


def build(gpu: bool = True, multinode: bool = False):
    """`multinode`: the curated learner trains as a Kubeflow Training Operator PyTorchJob over
    `learner_nodes` x `gpus_per_node` ranks (needs a gs:// pipeline root; see docs/distributed.md)."""
    suffix = "-multinode" if multinode else ("" if gpu else "-cpu")

    @dsl.pipeline(
        name=f"jestflow-jest{suffix}",
        description="JEST data curation: reference -> score -> joint-selection learner vs uniform -> "
        "evaluate -> report",
    )
    def jest_pipeline(
        curated_uri: str = "",
        pool_uri: str = "",
        eval_uri: str = "",
        demo_dir: str = f"{DATA_MOUNT}/demo",
        preset: str = "demo",
        model_size: str = "",
        reference_steps: int = 0,
        steps: int = 0,
        batch_size: int = 0,
        filter_ratio: float = 0.0,
        n_chunks: int = 0,
        method: str = "jest",
        seed: int = 0,
        overrides: list = [],
        pushgateway_url: str = "",
        score_parts: list = [0, 1, 2, 3],
        learner_nodes: int = 2,
        gpus_per_node: int = 8,
    ) -> NamedTuple("Outputs", summary=Artifact, report=Markdown):
        # Cheap and reads external state (data URIs, the demo folder): never cached.
        prep = _common(
            prepare(
                curated_uri=curated_uri,
                pool_uri=pool_uri,
                eval_uri=eval_uri,
                demo_dir=demo_dir,
                preset=preset,
                model_size=model_size,
                reference_steps=reference_steps,
                steps=steps,
                batch_size=batch_size,
                filter_ratio=filter_ratio,
                n_chunks=n_chunks,
                seed=seed,
                overrides=overrides,
            ),
            "1",
            "4Gi",
            cache=False,
        ).set_display_name("prepare")
        cfg = prep.outputs["config"]
        # Metrics of every stage go to the Pushgateway grouped by this run's id (empty URL: no pushes).
        mon = {"pushgateway": pushgateway_url, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        # Expensive and deterministic given config and data: cached, so re-runs reuse the reference.
        ref = _accelerated(
            train_reference(config=cfg, curated_uri=prep.outputs["curated"], **mon), gpu, "4", "16Gi", cache=True
        ).set_display_name("train reference")
        # Scoring fans out over pool shards, one branch per item of score_parts (branch p scores shards
        # p, p + n, p + 2n, ...), then the partial caches merge.
        with dsl.ParallelFor(items=score_parts, name="score-shards") as part:
            # The pool URI travels on the config artifact's metadata (see kfp_steps.prepare).
            part_task = _accelerated(
                score(config=cfg, reference=ref.outputs["reference"], part=part, parts=score_parts, **mon),
                gpu,
                "4",
                "16Gi",
                cache=True,
            ).set_display_name("score pool shards")
        scr = _common(
            merge_scores(parts=dsl.Collected(part_task.outputs["scores"]), pool_uri=prep.outputs["pool"]),
            "1",
            "4Gi",
            cache=True,
        ).set_display_name("merge scores")

        # Learners are the measurement: not cached, so each submitted run trains afresh. Three of them:
        # the chosen method, uniform at equal iterations, and uniform at equal total FLOPs.
        def learner(meth, match_flops_of, label: str):
            if multinode and label == "selected":
                # Only the launcher runs in the pipeline's pod: small requests, no GPU; the job's pods train.
                t = _common(
                    train_learner_pytorchjob(
                        config=cfg,
                        method=meth,
                        pool_uri=prep.outputs["pool"],
                        eval_uri=prep.outputs["eval"],
                        scores=scr.outputs["scores"],
                        reference=ref.outputs["reference"],
                        nodes=learner_nodes,
                        gpus_per_node=gpus_per_node,
                        image=GPU_IMAGE,
                        namespace="",
                        **mon,
                    ),
                    "1",
                    "2Gi",
                    cache=False,
                )
                t.set_display_name(f"learner: {label} (PyTorchJob)")
                kubernetes.use_field_path_as_env(t, env_name="JESTFLOW_NAMESPACE", field_path="metadata.namespace")
            else:
                t = _accelerated(
                    train_learner(
                        config=cfg,
                        method=meth,
                        match_flops_of=match_flops_of,
                        pool_uri=prep.outputs["pool"],
                        eval_uri=prep.outputs["eval"],
                        scores=scr.outputs["scores"],
                        reference=ref.outputs["reference"],
                        **mon,
                    ),
                    gpu,
                    "4",
                    "16Gi",
                    cache=False,
                ).set_display_name(f"learner: {label}")
            # Pure function of the model: cached.
            e = _common(
                evaluate(config=cfg, model=t.outputs["model"], eval_uri=prep.outputs["eval"], **mon),
                "2",
                "8Gi",
                cache=True,
            ).set_display_name(f"evaluate: {label}")
            return t.outputs["model"], e.outputs["results"]

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
            ),
            "1",
            "2Gi",
            cache=False,
        ).set_display_name("report")
        return NamedTuple("Outputs", summary=Artifact, report=Markdown)(rep.outputs["summary"], rep.outputs["report"])

    return jest_pipeline


jest_pipeline = build(gpu=True)
jest_pipeline_cpu = build(gpu=False)
jest_pipeline_multinode = build(gpu=True, multinode=True)
