from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from jestflow_components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def report(method: str, jest_model: Input[Model], jest_eval: Input[Artifact], uniform_model: Input[Model],
           uniform_eval: Input[Artifact], uniform_flops_model: Input[Model], uniform_flops_eval: Input[Artifact],
           config: Input[Artifact], scores: Input[Dataset], pool_uri: str, report: Output[Markdown],
           report_html: Output[HTML], summary: Output[Artifact]):
    """Compare the learners: results table, speed-ups, plots, a Markdown report, the self-contained HTML
    report (headline, curves, galleries, provenance) and the curation table (curation.parquet)."""
    from jestflow.platform import kfp_steps

    kfp_steps.report({method: (jest_model, jest_eval), "uniform": (uniform_model, uniform_eval),
                      "uniform@flops": (uniform_flops_model, uniform_flops_eval)}, report, summary,
                     config=config, scores=scores, pool_uri=pool_uri, report_html=report_html)
