"""`model.arch=hf-siglip`: transformers' SiglipModel as jestflow's model, offline (tiny configs, a
tokenizer trained from captions, nothing downloaded). Its folder is a standard checkpoint:
`SiglipModel.from_pretrained` and `PreTrainedTokenizerFast` load what jestflow wrote."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from cli import run_jestflow, smoke_args  # noqa: E402
from hf import CAPTIONS, make_pretrained_siglip  # noqa: E402
from jestflow.config import load_config  # noqa: E402
from jestflow.model.factory import build_model, load_model_dir, load_pretrained, save_model_dir  # noqa: E402
from jestflow.model.tokenizer import HFTokenizer, Tokenizer, build_tokenizer, load_tokenizer  # noqa: E402

HF = ["model.arch=hf-siglip"]


def _model():
    c = load_config("smoke", overrides=HF).model
    tok = build_tokenizer("hf-siglip", CAPTIONS, c.context_length)
    torch.manual_seed(0)
    return build_model(c, tok), tok


def test_tokenizer_from_captions_pads_truncates_and_round_trips(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = build_tokenizer("hf-siglip", CAPTIONS, 16)
    ids = tok.encode(["a red shirt", "naïve ☃ " * 30])
    assert ids.shape == (2, 16) and ids.dtype == torch.long
    eos = tok.tok.token_to_id("<eos>")
    short = ids[0].tolist()
    assert short[short.index(eos) + 1 :] == [tok.pad_id] * (15 - short.index(eos))  # EOS, then padding
    assert tok.tok.token_to_id("<unk>") is None  # byte-level: characters never seen still encode
    tok.save(str(tmp_path / "tokenizer.json"))
    again = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert isinstance(again, HFTokenizer) and torch.equal(again.encode(["a red shirt"]), ids[:1])
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert fast("a red shirt")["input_ids"] == short[: short.index(eos) + 1]
    Tokenizer.build(CAPTIONS, 16).save(str(tmp_path / "word.json"))
    assert isinstance(load_tokenizer(str(tmp_path / "word.json")), Tokenizer)
    (tmp_path / "junk.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="junk.json: neither a jestflow nor a Hugging Face tokenizer file"):
        load_tokenizer(str(tmp_path / "junk.json"))


def test_the_saved_folder_is_a_standard_siglip_checkpoint(tmp_path):
    from transformers import AutoTokenizer, SiglipModel

    model, tok = _model()
    model.eval()
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    tokens = tok.encode(["a red shirt", "a blue dress", "IMG_0412.jpg"])
    with torch.no_grad():
        u, v = model(images, tokens)
    save_model_dir(model, tok, str(tmp_path / "m"))
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                            "tokenizer_config.json", "jestflow.json"}  # fmt: skip
    hf = SiglipModel.from_pretrained(str(tmp_path / "m")).eval()
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "m"))  # SigLIP's recipe: padded to the context length
    texts = ["a red shirt", "a blue dress", "IMG_0412.jpg"]
    ids = auto(texts, padding="max_length", max_length=tok.context_length, truncation=True)["input_ids"]
    assert ids == tokens.tolist() and auto.pad_token_id == tok.pad_id
    pixels = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        hu = torch.nn.functional.normalize(hf.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        hv = torch.nn.functional.normalize(hf.get_text_features(input_ids=tokens).pooler_output, dim=-1)
    torch.testing.assert_close(hu, u)
    torch.testing.assert_close(hv, v)
    again, tok2 = load_model_dir(str(tmp_path / "m"))
    assert again.config == model.config and torch.equal(tok2.encode(["a red shirt"]), tokens[:1])
    assert float(again.log_t.detach()) == pytest.approx(float(model.log_t.detach()))
    assert float(again.bias.detach()) == -10
    # without jestflow.json it is a model hub's folder, which a pretrained reference may be
    (tmp_path / "m" / "jestflow.json").unlink()
    hub, hub_tok, _ = load_pretrained(str(tmp_path / "m"))
    assert torch.equal(hub_tok.encode(texts), tokens)
    with torch.no_grad():
        torch.testing.assert_close(hub.eval()(images, tokens)[0], u)


def test_flexi_view_and_no_activation_reuse():
    from jestflow.model.two_tower import apply_linear
    from jestflow.training.batch_selectors import use_reuse
    from jestflow.training.distributed import Dist

    model, tok = _model()
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    assert model.encode_image(images, patch_stride=2).shape == (2, 96)  # SigLIP interpolates its positions
    assert model.encode_image(images, 1, apply_linear).shape == (2, 96)
    with pytest.raises(ValueError, match="activation reuse is not available for model.arch=hf-siglip"):
        model.encode_image(images, 1, lambda layer, x: layer(x))
    cfg = load_config("smoke", overrides=[*HF, "select.method=jest", "learner.reuse_activations=auto"])
    assert use_reuse(cfg, cfg.learner, "cpu", Dist()) is False
    on = load_config("smoke", overrides=[*HF, "select.method=jest", "learner.reuse_activations=on"])
    with pytest.raises(ValueError, match="reuse_activations=on needs model.arch=vit"):
        use_reuse(on, on.learner, "cpu", Dist())


@pytest.mark.slow  # four short trainings of a SiglipModel on the smoke data (~1 min)
def test_the_stage_chain_with_hf_siglip(smoke_scored, tmp_path):
    """Reference, scoring, a JEST learner (Flexi-JEST too) and evaluation, every model a SiglipModel;
    the learner's folder loads with from_pretrained and resumes (a finished run is not retrained)."""
    from transformers import SiglipModel

    data = smoke_scored / "data"
    steps = [*HF, "reference.steps=4", "learner.steps=4"]
    r = run_jestflow(*smoke_args("train-reference", *steps, data=data / "curated", out=tmp_path / "ref"))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_jestflow(*smoke_args("score", *steps, reference=tmp_path / "ref", data=data / "pool", out=tmp_path / "sc"))
    assert r.returncode == 0, r.stderr[-3000:]
    for method in ("jest", "flexi-jest"):
        out = tmp_path / method
        args = smoke_args("train", *steps, f"select.method={method}", data=data / "pool", scores=tmp_path / "sc",
                          out=out, eval=data / "eval")  # fmt: skip
        r = run_jestflow(*args)
        assert r.returncode == 0, r.stderr[-3000:]
        assert isinstance(SiglipModel.from_pretrained(str(out)), SiglipModel)
        summary = json.loads((out / "train.json").read_text())
        assert summary["steps"] == 4 and summary["flops_total"] > 0
    r = run_jestflow(*smoke_args("evaluate", *HF, model=tmp_path / "jest", data=data / "eval"))
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow  # scores the smoke pool with a SigLIP and trains a learner 4 steps (~1 min)
def test_a_pretrained_siglip_replaces_the_trained_reference(smoke_scored, tmp_path):
    """score --reference-model FOLDER: no reference training, no training cost charged, the cache records
    it; a hf-siglip JEST learner trains on that cache with the reference's tokenizer at its own context
    length; a vit learner is told to switch arch or bring a word-level tokenizer."""
    make_pretrained_siglip(tmp_path / "pre")
    data = smoke_scored / "data"
    sc = tmp_path / "sc"
    r = run_jestflow(*smoke_args("score", reference_model=tmp_path / "pre", data=data / "pool", out=sc))
    assert r.returncode == 0, r.stderr[-3000:]
    index = json.loads((sc / "index.json").read_text())
    assert index["reference_pretrained"] is True and index["reference_flops"] == 0.0 and index["scoring_flops"] > 0
    args = smoke_args("train", *HF, "learner.steps=4", "select.method=jest", data=data / "pool", scores=sc,
                      out=tmp_path / "learner")  # fmt: skip
    r = run_jestflow(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    # a learner that starts from the pretrained weights (a learning rate too small to move them: the
    # trained folder must hold the pretrained model, its sizes and its tokenizer)
    init = smoke_args("train", "learner.steps=1", "select.method=jest", "learner.optim.lr=1e-30",
                      f"learner.init_from={tmp_path / 'pre'}", data=data / "pool", scores=sc,
                      out=tmp_path / "init")  # fmt: skip
    r = run_jestflow(*init)
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors.torch import load_file

    before, after = (
        load_file(str(tmp_path / "pre" / "model.safetensors")),
        load_file(str(tmp_path / "init" / "model.safetensors")),
    )
    assert before.keys() == after.keys() and all(torch.allclose(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "init" / "jestflow.json").read_text())["model"]["context_length"] == 24
    vit = smoke_args("train", "learner.steps=4", "select.method=jest", data=data / "pool", scores=sc,
                     out=tmp_path / "vit")  # fmt: skip
    r = run_jestflow(*vit)
    assert r.returncode == 2 and "train the learner with --set model.arch=hf-siglip" in r.stderr


def test_unloadable_pretrained_references_are_one_line_errors(tmp_path):
    """A hub name that cannot be fetched (offline here: the same code path a cluster takes to download),
    a file, a folder without a model: each one line naming what was given."""
    from jestflow.model.factory import load_reference

    for source, message in (
        ("google/siglip-base-patch16-224", "google/siglip-base-patch16-224: not a loadable SigLIP model"),
        (str(tmp_path), f"{tmp_path}: not a loadable SigLIP model"),
    ):
        with pytest.raises(ValueError, match=message):
            load_reference(source)
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="f.bin: a pretrained model is a folder"):
        load_reference(str(tmp_path / "f.bin"))


@pytest.mark.slow  # two torchrun ranks, one process, and an interrupted run (~2 min)
def test_hf_siglip_under_torchrun_and_resumed(smoke_scored, tmp_path):
    """A hf-siglip JEST learner on the vit reference's cache (its word-level tokenizer): two gloo ranks
    choose what one process chooses and end with the same weights; a run stopped by SIGTERM resumes and
    ends exactly as an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from jestflow.training.loop import read_uid_log

    def args(out, steps, *extra):
        sets = (*HF, f"learner.steps={steps}", "learner.threads=1", "learner.batch_size=16",
                "learner.checkpoint_every=2", "learner.eval_every=0", *extra)  # fmt: skip
        return smoke_args("train", *sets, method="jest", data=smoke_scored / "data" / "pool",
                          scores=smoke_scored / "scores", out=out)  # fmt: skip

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_jestflow(*args(one, 4), env=env).returncode == 0
    dist = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "jestflow"]
    r = subprocess.run(dist + args(two, 4), capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["uids"] for x in read_uid_log(str(one))] == [x["uids"] for x in read_uid_log(str(two))]
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_jestflow(*args(straight, 8), env=env).returncode == 0
    p = subprocess.Popen([sys.executable, "-m", "jestflow", *args(resumed, 8, "learner.threads=1")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not (resumed / "checkpoint.pt").exists():
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "SIGTERM received" in err and not (resumed / "train.json").exists()
    r = run_jestflow(*args(resumed, 8), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = ("steps", "examples_seen", "flops", "noise_mix")
    s1, s2 = (json.loads((d / "train.json").read_text()) for d in (straight, resumed))
    assert {k: s1[k] for k in keys} == {k: s2[k] for k in keys}
    assert read_uid_log(str(resumed)) == read_uid_log(str(straight))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # the whole local pipeline (KFP's local runner) with a SigLIP brought in (~1 min)
def test_jestflow_run_with_a_pretrained_reference_folder(smoke_scored, tmp_path):
    """`jestflow run --reference-model FOLDER`: the reference step fetches the folder (recorded as
    pretrained, nothing trained), and the learners come out as checkpoints transformers loads."""
    from transformers import AutoTokenizer, SiglipModel

    make_pretrained_siglip(tmp_path / "pre")
    out = tmp_path / "out"
    sets = (*HF, "learner.steps=8", "learner.eval_every=4")
    r = run_jestflow(*smoke_args("run", *sets, data=smoke_scored / "data", reference_model=tmp_path / "pre", out=out))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    (fetched,) = out.glob("kfp/*/train-reference/reference/jestflow.json")
    assert json.loads(fetched.read_text())["pretrained"] == str(tmp_path / "pre")
    learners = sorted(out.glob("kfp/*/train-learner*/model"))
    assert len(learners) == 3  # JEST, uniform, uniform at JEST's compute
    SiglipModel.from_pretrained(str(learners[0]))
    assert AutoTokenizer.from_pretrained(str(learners[0])).pad_token == "<pad>"
    assert json.loads((out / "results.json").read_text())["rows"]
