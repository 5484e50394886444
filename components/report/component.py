from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from jestflow_components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def report(method: str, jest_model: Input[Model], jest_eval: Input[Artifact], uniform_model: Input[Model],
           uniform_eval: Input[Artifact], uniform_flops_model: Input[Model], uniform_flops_eval: Input[Artifact],
           report: Output[Markdown], summary: Output[Artifact]):
    """Compare the learners: results table, speed-ups, learning-curve plots (PNG) and a Markdown report."""
    from jestflow import kfp_steps

    kfp_steps.report({method: (jest_model, jest_eval), "uniform": (uniform_model, uniform_eval),
                      "uniform@flops": (uniform_flops_model, uniform_flops_eval)}, report, summary)
