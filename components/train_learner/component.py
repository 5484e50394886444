from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from jestflow_components.image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_learner(config: Input[Artifact], method: str, match_flops_of: str, pool_uri: str, eval_uri: str,
                  scores: Input[Dataset], reference: Input[Model], model: Output[Model], metrics: Output[Metrics]):
    """Stage 3: train a learner on the pool, sub-batches chosen by `method` (jest, uniform, ...)."""
    from jestflow.platform import kfp_steps

    kfp_steps.train_learner(config, method, match_flops_of, pool_uri, eval_uri, scores, reference, model, metrics)
