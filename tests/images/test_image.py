"""The CPU image built from images/ (make image-cpu; `make test` builds it): its facts, and pipeline
components run inside it by KFP's own DockerRunner."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jestflow import __version__
from jestflow_components.image import CPU_IMAGE


def _docker(*args, **kw):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def image():
    ok = shutil.which("docker") and _docker("image", "inspect", CPU_IMAGE).returncode == 0
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(
                f"{CPU_IMAGE} is not built: `make test` builds it with `make image-cpu` (needs a Docker engine)"
            )
        pytest.skip(f"{CPU_IMAGE} not built here (make image-cpu)")
    return CPU_IMAGE


def test_image_runs_as_non_root_with_jestflow_of_this_version(image):
    cfg = json.loads(_docker("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["User"] == "10001:10001"
    assert not [e for e in cfg["Env"] if any(s in e.split("=")[0] for s in ("KEY", "TOKEN", "SECRET", "PASSWORD"))]
    r = _docker(
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "python3",
        "-c",
        "import os, jestflow, torch, kfp; print(os.getuid(), jestflow.__version__, torch.__version__, kfp.__version__)",
    )
    assert r.returncode == 0, r.stderr
    uid, version, torch_version, kfp_version = r.stdout.split()
    assert (uid, version, kfp_version) == ("10001", __version__, "2.17.3") and "cpu" in torch_version


def test_no_wheel_left_in_the_image(image):
    r = _docker("run", "--rm", "--network", "none", image, "sh", "-c", "find /opt /tmp /home -name '*.whl' | head")
    assert r.returncode == 0 and r.stdout.strip() == ""


def test_components_run_inside_the_image_with_kfp_docker_runner(image, smoke_scored, tmp_path):
    """prepare (writes the demo data) and evaluate (torch: loads a model, embeds, scores) run in the CPU
    image; the model comes in through an importer (the CUDA image that trains it is not built here)."""
    import kfp.local
    from kfp import dsl

    from jestflow_components.evaluate.component import evaluate
    from jestflow_components.prepare.component import prepare

    root = tmp_path / "root"
    shutil.copytree(smoke_scored / "ref", root / "reference")
    subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)  # the container runs as uid 10001
    kfp.local.init(runner=kfp.local.DockerRunner(network_mode="none"), pipeline_root=str(root), raise_on_error=True)

    @dsl.pipeline(name="image-check")
    def image_check(demo_dir: str, reference_uri: str) -> dsl.Artifact:
        prep = prepare(
            curated_uri="",
            pool_uri="",
            eval_uri="",
            demo_dir=demo_dir,
            preset="smoke",
            model_size="",
            reference_steps=0,
            steps=0,
            batch_size=0,
            filter_ratio=0.0,
            n_chunks=0,
            seed=0,
            overrides=[],
            check_data=False,
        )
        model = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Model, reimport=False)
        ev = evaluate(
            config=prep.outputs["config"],
            model=model.output,
            eval_uri=prep.outputs["eval"],
            pushgateway="",
        )
        return ev.outputs["results"]

    task = image_check(demo_dir=str(root / "demo"), reference_uri=str(root / "reference"))
    out = Path(task.output.path)
    results = json.loads(out.read_text())
    assert 0.0 <= results["zeroshot_top1"] <= 1.0 and results["n"] == 200
    assert out.stat().st_uid == 10001  # written inside the container, by its non-root user
    assert (root / "demo" / "pool").stat().st_uid == 10001
