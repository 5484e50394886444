"""`make compile`: write pipelines/compiled/*.yaml from the pipeline source (never edit those by hand).

python -m jestflow_pipelines.compile [OUT_DIR]
"""

import os
import sys

from kfp import compiler

from jestflow_pipelines.jest_pipeline import jest_pipeline, jest_pipeline_cpu, jest_pipeline_multinode

TARGETS = {
    "jest_pipeline.yaml": jest_pipeline,
    "jest_pipeline_cpu.yaml": jest_pipeline_cpu,
    "jest_pipeline_multinode.yaml": jest_pipeline_multinode,
}


def compile_all(out_dir: str) -> list:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, fn in TARGETS.items():
        path = os.path.join(out_dir, name)
        compiler.Compiler().compile(fn, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in compile_all(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "compiled")):
        print(p)
