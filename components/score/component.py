from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from jestflow_components.image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def score(config: Input[Artifact], reference: Input[Model], part: int, parts: list,
          scores: Output[Dataset]):
    """Stage 2, one branch of the fan-out: the reference over pool shards part, part + len(parts), ...;
    embeddings and losses cached by uid, one score file per pool shard."""
    from jestflow.platform import kfp_steps

    kfp_steps.score(config, reference, part, parts, scores)

