from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from jestflow_components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(config: Input[Artifact], model: Input[Model], eval_uri: str, metrics: Output[Metrics],
             results: Output[Artifact]):
    """Stage 4: zero-shot top-1 and image<->text recall@1/@5 on the held-out split."""
    from jestflow.platform import kfp_steps

    kfp_steps.evaluate(config, model, eval_uri, metrics, results)
