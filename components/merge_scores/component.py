from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from jestflow_components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_scores(parts: Input[List[Dataset]], pool_uri: str, scores: Output[Dataset]):
    """Stage 2, the join: the fan-out's partial caches become the one cache the learners read."""
    from jestflow.platform import kfp_steps

    kfp_steps.merge_scores(parts, pool_uri, scores)
