from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from jestflow_components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_learner_multinode(config: Input[Artifact], method: str, pool_uri: str, eval_uri: str,
                            scores: Input[Dataset], reference: Input[Model], model: Output[Model],
                            metrics: Output[Metrics], nodes: int, gpus_per_node: int, image: str, job_kind: str,
                            namespace: str, accelerator_type: str, node_selector: dict, data_claim: str):
    """Stage 3 on several nodes: create a Kubeflow Trainer TrainJob (or a Training Operator PyTorchJob)
    running torchrun over `nodes` x `gpus_per_node` ranks, wait for it, fail with the controller's reason."""
    from jestflow.platform import kfp_steps

    kfp_steps.train_learner_multinode(config, method, pool_uri, eval_uri, scores, reference, model, metrics, nodes,
                                      gpus_per_node, image, job_kind, namespace, accelerator_type, node_selector,
                                      data_claim)
