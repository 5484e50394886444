import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_kfp


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """The pipelines compiled from source now, into a temporary folder."""
    from jestflow_pipelines.compile import compile_all

    out = tmp_path_factory.mktemp("compiled")
    compile_all(str(out))
    return out
