import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/services.py

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen():
    def make(seed=0):
        return torch.Generator().manual_seed(seed)
    return make


@pytest.fixture(scope="session")
def monitoring(tmp_path_factory):
    """A real Pushgateway and Prometheus (1 s scrape) on 127.0.0.1, stopped by PID at the end."""
    from services import Monitoring

    m = Monitoring(str(tmp_path_factory.mktemp("monitoring")))
    try:
        m.start()
    except RuntimeError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    yield m
    m.stop()


@pytest.fixture(scope="session")
def local_pipeline(tmp_path_factory, monitoring):
    """The whole pipeline through kfp.local on the smoke preset, pushing metrics to the gateway."""
    root = tmp_path_factory.mktemp("localrun")
    env = {**os.environ, "JESTFLOW_PUSH_INTERVAL": "1"}
    r = subprocess.run([sys.executable, "-m", "jestflow", "run", "--preset", "smoke", "--data", str(root / "data"),
                        "--out", str(root / "out"), "--pushgateway", monitoring.gateway],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root / "out", r.stdout + r.stderr
