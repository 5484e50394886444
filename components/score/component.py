from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from jestflow_components.image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def score(config: Input[Artifact], reference: Input[Model], pool_uri: str, scores: Output[Dataset], pushgateway: str,
          run_id: str):
    """Stage 2: run the reference once over the pool; cache embeddings and losses by uid."""
    from jestflow import kfp_steps

    kfp_steps.score(config, reference, pool_uri, scores, pushgateway, run_id)
