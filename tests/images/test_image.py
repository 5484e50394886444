"""The images built from images/ (`make image-cpu`, which `make test` runs; `make image-cuda`, too big for
CI: its tests run where it was built and skip elsewhere): their facts, torchrun with the image's own
Python, and the pipeline's steps run inside them by KFP's own DockerRunner."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jestflow import __version__
from jestflow_components.image import CPU_IMAGE, GPU_IMAGE

ROOT = Path(__file__).resolve().parents[2]
TORCH = next(
    line.split("==")[1].split()[0]
    for line in (ROOT / "constraints.txt").read_text().splitlines()
    if line.startswith("torch==")
)


def _docker(*args, **kw):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=900, **kw)


def _source_digest() -> str | None:
    """images/build.sh's io.jestflow.source label for dist/'s wheel (what `make test` just built)."""
    wheel = ROOT / "dist" / f"jestflow-{__version__}-py3-none-any.whl"
    if not wheel.exists():
        return None
    with zipfile.ZipFile(wheel) as z:
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        return hashlib.sha256(z.read(record)).hexdigest()[:16]


def _why_not(image: str) -> str | None:
    """None when `image` is built from the current source; else why its tests cannot run."""
    target = "make image-" + ("cpu" if image == CPU_IMAGE else "cuda")
    if not (shutil.which("docker") and _docker("image", "inspect", image).returncode == 0):
        return f"{image} is not built here ({target})"
    labels = json.loads(_docker("image", "inspect", image).stdout)[0]["Config"]["Labels"] or {}
    if labels.get("io.jestflow.source") != _source_digest():
        return f"{image} was built from other source than dist/'s wheel: rebuild it ({target})"
    return None


@pytest.fixture(scope="module", params=[CPU_IMAGE, GPU_IMAGE], ids=["cpu", "cuda"])
def image(request):
    why = _why_not(request.param)
    if why:
        if request.param == CPU_IMAGE and os.environ.get("CI"):
            pytest.fail(f"{why}; `make test` builds it with `make image-cpu` (needs a Docker engine)")
        pytest.skip(why)  # the CUDA image is too big for CI; a stale one would test old code
    return request.param


def test_image_runs_as_non_root_with_jestflow_and_the_one_torch(image):
    cfg = json.loads(_docker("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["User"] == "10001:10001"
    assert not [e for e in cfg["Env"] if any(s in e.split("=")[0] for s in ("KEY", "TOKEN", "SECRET", "PASSWORD"))]
    code = (
        "import os, jestflow, torch, kfp; print(os.getuid(), jestflow.__version__, torch.__version__, "
        "torch.version.cuda, kfp.__version__)"
    )
    r = _docker("run", "--rm", "--network", "none", image, "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    uid, version, torch_version, cuda, kfp_version = r.stdout.split()
    assert (uid, version, kfp_version) == ("10001", __version__, "2.17.3")
    assert torch_version.split("+")[0] == TORCH  # constraints.txt's torch in both images
    assert (cuda == "None") == (image == CPU_IMAGE), (torch_version, cuda)


def test_builds_leave_no_dangling_layers(image):
    """images/build.sh prunes the intermediate images a rebuild leaves dangling (the classic builder's cache;
    unpruned, a few rebuilds filled a CI machine's disk: "no space left on device" at COPY dist), and only
    those carrying the Dockerfile's label."""
    labels = json.loads(_docker("image", "inspect", image).stdout)[0]["Config"]["Labels"] or {}
    assert labels.get("io.jestflow.build") == "1"
    r = _docker("images", "-aq", "--filter", "dangling=true", "--filter", "label=io.jestflow.build")
    assert r.returncode == 0 and r.stdout.split() == [], r.stdout


def test_no_wheel_left_in_the_image(image):
    r = _docker("run", "--rm", "--network", "none", image, "sh", "-c", "find /opt /tmp /home -name '*.whl' | head")
    assert r.returncode == 0 and r.stdout.strip() == ""


def test_torchrun_runs_jestflow_with_the_images_python(image, smoke_scored, tmp_path):
    """What the training jobs run (training_jobs.LAUNCHER): `python -m torch.distributed.run` with two
    gloo ranks training JEST for 2 steps on the smoke data, inside the image, as its non-root user."""
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["chmod", "a+rwX", str(out)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(smoke_scored)], check=True)  # the image's user is 10001
    launcher = ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # --network none leaves the container's own hostname unresolvable and torchrun's rendezvous store
    # waits on it forever; a pod resolves its hostname, so name the container `localhost` here.
    net = ["--network", "none", "--hostname", "localhost"]
    r = _docker("run", "--rm", *net, "-v", f"{smoke_scored}:/data:ro", "-v", f"{out}:/out", image,
                *launcher, "-m", "jestflow", "--help")  # fmt: skip
    assert r.returncode == 0 and "usage: jestflow" in r.stdout, r.stderr[-2000:]
    train = ["-m", "jestflow", "train", "--method", "jest", "--data", "/data/data/pool", "--scores", "/data/scores",
             "--out", "/out/jest", "--preset", "smoke", "--quiet", "--set", "learner.steps=2",
             "--set", "learner.eval_every=0", "--set", "learner.decode_workers=1"]  # fmt: skip
    r = _docker("run", "--rm", *net, "-v", f"{smoke_scored}:/data:ro", "-v", f"{out}:/out", image,
                *launcher, *train)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "jest" / "train.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2


def test_components_run_inside_the_image_with_kfp_docker_runner(image, smoke_scored, tmp_path):
    """prepare (writes the demo data) and evaluate (torch: loads a model, embeds, scores) run in the image
    by KFP's DockerRunner; the model comes in through an importer."""
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
        prep = prepare(curated_uri="", pool_uri="", eval_uri="", demo_dir=demo_dir, preset="smoke", model_size="",
                       reference_steps=0, steps=0, batch_size=0, filter_ratio=0.0, n_chunks=0, seed=0, overrides=[],
                       check_data=False).set_container_image(image)  # fmt: skip
        model = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Model, reimport=False)
        ev = evaluate(config=prep.outputs["config"], model=model.output, eval_uri=prep.outputs["eval"])
        return ev.set_container_image(image).outputs["results"]

    task = image_check(demo_dir=str(root / "demo"), reference_uri=str(root / "reference"))
    out = Path(task.output.path)
    results = json.loads(out.read_text())
    assert 0.0 <= results["zeroshot_top1"] <= 1.0 and results["n"] == 200
    assert out.stat().st_uid == 10001  # written inside the container, by its non-root user
    assert (root / "demo" / "pool").stat().st_uid == 10001


@pytest.mark.skipif(bool(_why_not(GPU_IMAGE)), reason=str(_why_not(GPU_IMAGE)))
def test_the_whole_smoke_pipeline_runs_in_the_cuda_image(tmp_path):
    """Every step of the CPU variant, in the CUDA image (its torch runs on CPU where no GPU is), by KFP's
    DockerRunner, with the images fixed in the spec (the local runner does not resolve an image
    parameter: jest_pipeline.build's `fixed_images`)."""
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["chmod", "a+rwX", str(root)], check=True)
    # In its own process: kfp.local re-points stdout while a pipeline runs (its indented task logs),
    # which leaked into later tests that read what a command printed.
    script = tmp_path / "cuda_pipeline.py"
    script.write_text(
        "import json, sys\n"
        "from pathlib import Path\n"
        "import kfp.local\n"
        "from jestflow_pipelines.jest_pipeline import build\n"
        "root = Path(sys.argv[1])\n"
        'runner = kfp.local.DockerRunner(network_mode="none")\n'
        "kfp.local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)\n"
        f"pipeline = build(gpu=False, fixed_images=({GPU_IMAGE!r}, {GPU_IMAGE!r}))\n"
        'task = pipeline(demo_dir=str(root / "demo"), preset="smoke", overrides=["learner.decode_workers=1"])\n'
        'print("SUMMARY", task.outputs["summary"].path)\n'
    )
    r = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    summary = next(ln.split("SUMMARY ", 1)[1] for ln in r.stdout.splitlines() if "SUMMARY " in ln)
    results = json.loads(Path(summary, "results.json").read_text())
    assert {r["run"] for r in results["rows"]} == {"jest", "uniform", "uniform@flops"}
