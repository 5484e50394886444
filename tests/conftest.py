import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/services.py

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Fixtures that train models or run the pipeline: a test that uses one is in the slow tier, whatever
# its own marks say (`make test-fast` runs `-m "not slow"`).
SLOW_FIXTURES = {"smoke_scored", "chain", "local_pipeline", "monitoring", "gcs"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def gen():
    def make(seed=0):
        return torch.Generator().manual_seed(seed)

    return make


def start_service(service):
    """Start a test service; one that cannot start fails the run in CI and is skipped elsewhere."""
    try:
        return service.start()
    except RuntimeError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def monitoring(tmp_path_factory):
    """A real Pushgateway and Prometheus (1 s scrape) on 127.0.0.1, stopped by PID at the end."""
    from services import Monitoring

    m = start_service(Monitoring(str(tmp_path_factory.mktemp("monitoring"))))
    yield m
    m.stop()


@pytest.fixture(scope="session")
def local_pipeline(tmp_path_factory, monitoring):
    """The whole pipeline through kfp.local on the smoke preset, pushing metrics to the gateway."""
    root = tmp_path_factory.mktemp("localrun")
    env = {**os.environ, "JESTFLOW_PUSH_INTERVAL": "1", "JESTFLOW_RESULTS_GRACE": "3"}
    from cli import run_jestflow

    r = run_jestflow(
        "run",
        "--preset",
        "smoke",
        "--data",
        root / "data",
        "--out",
        root / "out",
        "--pushgateway",
        monitoring.gateway,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root / "out", r.stdout + r.stderr


@pytest.fixture(scope="session")
def smoke_scored(tmp_path_factory):
    """Smoke demo data, a trained reference and its score cache (shared by the tests that need them)."""
    from jestflow.cli import main

    root = tmp_path_factory.mktemp("smoke")
    d = root / "data"
    quiet = ["--preset", "smoke", "--quiet"]
    assert main(["data", "demo", "--out", str(d), *quiet]) == 0
    assert main(["train-reference", "--data", str(d / "curated"), "--out", str(root / "ref"), *quiet]) == 0
    assert (
        main(
            [
                "score",
                "--reference",
                str(root / "ref"),
                "--data",
                str(d / "pool"),
                "--out",
                str(root / "scores"),
                *quiet,
            ]
        )
        == 0
    )
    return root


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A real GCS API (gcp-storage-emulator) on 127.0.0.1, seen through a fault-injecting proxy."""
    from services import GCSEmulator

    em = start_service(GCSEmulator(str(tmp_path_factory.mktemp("gcs"))))
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = em.host
    yield em
    em.stop()
    if old is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = old
