from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from jestflow_components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_learner_pytorchjob(config: Input[Artifact], method: str, pool_uri: str, eval_uri: str,
                             scores: Input[Dataset], reference: Input[Model], model: Output[Model],
                             metrics: Output[Metrics], nodes: int, gpus_per_node: int, image: str, namespace: str,
                             pushgateway: str, run_id: str):
    """Stage 3 on several nodes: create a Kubeflow Training Operator PyTorchJob running torchrun over
    `nodes` x `gpus_per_node` ranks, wait for it, and fail with the operator's reason if it fails."""
    from jestflow import kfp_steps

    kfp_steps.train_learner_pytorchjob(config, method, pool_uri, eval_uri, scores, reference, model, metrics, nodes,
                                       gpus_per_node, image, namespace, pushgateway, run_id)
