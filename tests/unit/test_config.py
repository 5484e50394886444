import subprocess
import sys

import pytest

from jestflow import config as C
from jestflow.config import PRESETS, dump, from_dict, load_config, parse_overrides, to_dict


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_resolve(preset):
    cfg = load_config(preset)
    assert cfg.learner.batch_size % cfg.select.n_chunks == 0
    assert from_dict(to_dict(cfg)) == cfg


def test_overrides_are_typed():
    cfg = load_config(
        "smoke",
        overrides=["learner.steps=7", "select.filter_ratio=0.5", "learner.optim.lr=1e-3", "select.method=uniform"],
    )
    assert cfg.learner.steps == 7 and cfg.select.filter_ratio == 0.5 and cfg.learner.optim.lr == 1e-3
    assert cfg.select.method == "uniform"
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_on_off_switches_survive_yaml(tmp_path):
    """YAML 1.1 reads on/off as booleans; the string switches still get "on"/"off"."""
    cfg = load_config("smoke", overrides=["learner.compile=off", "learner.reuse_activations=on"])
    assert (cfg.learner.compile, cfg.learner.reuse_activations) == ("off", "on")
    f = tmp_path / "c.yaml"
    f.write_text("learner:\n  compile: on\n")
    assert load_config("smoke", str(f)).learner.compile == "on"
    with pytest.raises(ValueError, match="select.method='off' is not one of"):
        load_config("smoke", overrides=["select.method=off"])


def test_model_size_resets_architecture():
    cfg = load_config("smoke", overrides=["model.size=b16"])
    assert (cfg.model.width, cfg.model.depth, cfg.model.image_size, cfg.model.patch_size) == (768, 12, 224, 16)
    cfg = load_config("smoke", overrides=["model.size=s16", "model.depth=2"])
    assert cfg.model.width == 384 and cfg.model.depth == 2


def test_hf_siglip_embedding_follows_width():
    """SigLIP's image embedding is its tower's width: embed_dim follows it, an explicit other value is
    refused, as is the softmax loss; the resolved config survives a round trip through its dict."""
    from jestflow.config import from_dict, to_dict

    cfg = load_config("smoke", overrides=["model.arch=hf-siglip"])
    assert cfg.model.embed_dim == cfg.model.width == 96
    cfg = load_config("smoke", overrides=["model.arch=hf-siglip", "model.size=small"])
    assert cfg.model.embed_dim == cfg.model.width == 192 and from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="model.embed_dim=64 must equal model.width=96 for hf-siglip"):
        load_config("smoke", overrides=["model.arch=hf-siglip", "model.embed_dim=64"])
    with pytest.raises(ValueError, match="hf-siglip trains with the sigmoid loss only"):
        load_config("smoke", overrides=["model.arch=hf-siglip", "model.loss=softmax"])


def test_yaml_file_and_dump(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("learner:\n  steps: 11\n")
    cfg = load_config("smoke", str(f))
    assert cfg.learner.steps == 11
    assert "steps: 11" in dump(cfg)


@pytest.mark.parametrize(
    "override,message",
    [
        pytest.param("learner.steps=-5", "learner.steps=-5 must be positive", id="negative-steps"),
        pytest.param("select.filter_ratio=1.0", r"filter_ratio=1.0 must be in \(0, 1\)", id="ratio-one"),
        pytest.param("select.filter_ratio=-0.2", r"filter_ratio=-0.2 must be in \(0, 1\)", id="ratio-negative"),
        pytest.param("learner.batch_size=30", "batch_size=30 is not divisible by select.n_chunks=4", id="indivisible"),
        pytest.param("select.method=magic", "select.method='magic' is not one of", id="unknown-method"),
        pytest.param("learner.stepz=3", "unknown config key learner.stepz", id="unknown-key"),
        pytest.param("learner.steps=many", "learner.steps='many': expected int", id="wrong-type"),
        pytest.param("model.size=huge", "model.size='huge' is not one of", id="unknown-size"),
        pytest.param("model.loss=hinge", "model.loss='hinge'", id="unknown-loss"),
        pytest.param("reference.init_from=x", "reference.init_from is not supported", id="reference-init"),
        pytest.param("model.arch=clip", "model.arch='clip' must be vit or hf-siglip", id="unknown-arch"),
        # issue 13: these passed validation and crashed (or "trained") later
        pytest.param(
            "learner.checkpoint_every=0", "learner.checkpoint_every=0 must be positive", id="checkpoint-every-0"
        ),
        pytest.param("reference.log_every=0", "reference.log_every=0 must be positive", id="log-every-0"),
        pytest.param("model.patch_size=0", "model.patch_size=0 must be positive", id="patch-size-0"),
        pytest.param("model.context_length=0", "model.context_length=0 must be positive", id="context-length-0"),
        pytest.param("model.image_size=0", "model.image_size=0 must be positive", id="image-size-0"),
        pytest.param("model.embed_dim=0", "model.embed_dim=0 must be positive", id="embed-dim-0"),
        pytest.param("eval.batch_size=0", "eval.batch_size=0 must be positive", id="eval-batch-0"),
        pytest.param("demo.n_pool=0", "demo.n_pool=0 must be positive", id="demo-pool-0"),
    ],
)
def test_nonsense_configuration_is_rejected(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("smoke", overrides=[override])


def test_unknown_preset_and_missing_file():
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("giant")
    with pytest.raises(ValueError, match="config file not found"):
        load_config("smoke", "/nonexistent.yaml")


def test_reading_a_config_does_not_import_torch():
    """The configuration and the method registry are torch-free: a config can be read, validated and
    printed without paying torch's import (seconds), e.g. by `jestflow submit` and the pipeline."""
    import subprocess
    import sys

    code = (
        "import sys, jestflow.config as C; C.load_config('smoke').with_method('flexi-jest'); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('numpy', 'PIL')], 'numpy or PIL imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1000:]


# --- a --config FILE reaches every command that reads a configuration ----------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["run", "--out", "{tmp}/run", "--data", "{tmp}/data"], id="run"),
        pytest.param(["bench", "curation", "--out", "{tmp}/bench"], id="bench-curation"),
    ],
)
def test_config_file_is_read_by_run_and_bench(tmp_path, command):
    """A bad value in the file must stop the command at once (it was ignored, and the run went ahead)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner:\n  steps: -3\n")
    args = [a.format(tmp=tmp_path) for a in command]
    r = subprocess.run(
        [sys.executable, "-m", "jestflow", *args, "--preset", "smoke", "--config", str(bad), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip() == "jestflow: error: learner.steps=-3 must be positive"


def test_config_file_travels_as_overrides(tmp_path):
    """What `run` hands the pipeline and `bench` hands its workers resolves to what --config gives."""
    f = tmp_path / "c.yaml"
    f.write_text("model: {size: small, width: 96}\nlearner: {steps: 7, compile: off}\nselect: {method: flexi-jest}\n")
    direct = C.load_config("smoke", str(f), ["learner.steps=9"])
    via = C.load_config("smoke", None, [*C.file_overrides(str(f)), "learner.steps=9"])
    assert via == direct
    assert (direct.model.size, direct.model.width, direct.model.depth) == ("small", 96, 6)
    assert (direct.learner.steps, direct.learner.compile, direct.select.method) == (9, "off", "flexi-jest")
