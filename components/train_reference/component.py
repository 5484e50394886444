from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from jestflow_components.image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_reference(
    config: Input[Artifact],
    curated_uri: str,
    reference: Output[Model],
    metrics: Output[Metrics],
    reference_model: str = "",
):
    """Stage 1: train the reference model on the curated split, or, when `reference_model` names a
    pretrained SigLIP (folder, gs:// prefix or hub name), fetch it instead of training one."""
    from jestflow.platform import kfp_steps

    kfp_steps.train_reference(config, curated_uri, reference, metrics, reference_model)
