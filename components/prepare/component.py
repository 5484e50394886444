from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from jestflow_components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare(curated_uri: str, pool_uri: str, eval_uri: str, demo_dir: str, preset: str, model_size: str,
            reference_steps: int, steps: int, batch_size: int, filter_ratio: float, n_chunks: int, seed: int,
            overrides: list, check_data: bool, config: Output[Artifact],
            demo: Output[Dataset]) -> NamedTuple("Data", curated=str, pool=str, eval=str):
    """Resolve the run's configuration; write the demo dataset (into `demo_dir`, or else the `demo`
    artifact) if no data URIs are given."""
    from jestflow.platform import kfp_steps

    return kfp_steps.prepare(curated_uri, pool_uri, eval_uri, demo_dir, preset, model_size, reference_steps, steps,
                             batch_size, filter_ratio, n_chunks, seed, overrides, config, demo, check_data)
