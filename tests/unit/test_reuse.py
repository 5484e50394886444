"""Activation reuse (activation_reuse.py): replaying the scoring forward's linear outputs gives the gradients of a
fresh forward on the chosen rows, and a training run with reuse equals one without."""

import pytest
import torch

from cli import smoke_args
from jestflow import config as C
from jestflow.core.flops import train_groups
from jestflow.core.losses import batch_loss
from jestflow.model import activation_reuse
from jestflow.model.two_tower import TwoTower, load_model
from jestflow.training.distributed import Dist
from jestflow.training.loop import read_uid_log, use_reuse


def train_flops(model, groups, replay_stride=0):  # the cost model's training step, for this model
    from jestflow.core.flops import train_step

    return train_step(model.config, groups, replay_stride)


def _model_and_inputs(n=12, loss="sigmoid", seed=0):
    cfg = C.load_config("smoke", overrides=[f"model.loss={loss}"]).model
    torch.manual_seed(seed)
    m = TwoTower(cfg, 60)
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randint(0, 256, (n, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, 60, (n, cfg.context_length), generator=g)
    lengths = torch.randint(1, cfg.context_length + 1, (n,), generator=g)
    tokens[torch.arange(cfg.context_length)[None, :] >= lengths[:, None]] = 0  # varied padding: masks matter
    return m, images, tokens


def _grads(m, loss, u, v):
    m.zero_grad(set_to_none=True)
    batch_loss(loss, u, v, m.log_t, m.bias).backward()
    return {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
@pytest.mark.parametrize("stride", [1, 2])
def test_replay_matches_a_fresh_forward_forward_and_backward(loss, stride):
    m, images, tokens = _model_and_inputs(loss=loss)
    rec_i, rec_t = activation_reuse.Recorder(), activation_reuse.Recorder()
    with torch.no_grad():
        m(images, tokens, stride, rec_i, rec_t)
    idx = torch.tensor([9, 2, 5, 11, 0])  # out of order, as a selection returns them
    u, v = m(images[idx], tokens[idx], stride)
    want = _grads(m, loss, u, v)
    u2, v2 = m(
        images[idx],
        tokens[idx],
        stride,
        activation_reuse.Replayer(rec_i.tape.take(idx)),
        activation_reuse.Replayer(rec_t.tape.take(idx)),
    )
    torch.testing.assert_close(u2, u, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v2, v, rtol=1e-5, atol=1e-6)
    got = _grads(m, loss, u2, v2)
    assert set(got) == set(want) and len(want) == sum(p.requires_grad for p in m.parameters())
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)
    # the recorded tape holds what tape_bytes_per_example says (fp32 here: 4 bytes an element)
    c = m.config
    assert rec_i.tape.nbytes() + rec_t.tape.nbytes() == len(images) * activation_reuse.tape_bytes_per_example(
        c, stride, 4
    )


def test_replay_under_bf16_autocast_stays_close():
    m, images, tokens = _model_and_inputs()
    rec_i, rec_t = activation_reuse.Recorder(), activation_reuse.Recorder()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        m(images, tokens, 1, rec_i, rec_t)
    assert rec_i.tape.outputs[0].dtype == torch.bfloat16
    idx = torch.tensor([1, 4, 7, 10])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _grads(m, "sigmoid", *m(images[idx], tokens[idx]))
        got = _grads(
            m,
            "sigmoid",
            *m(
                images[idx],
                tokens[idx],
                1,
                activation_reuse.Replayer(rec_i.tape.take(idx)),
                activation_reuse.Replayer(rec_t.tape.take(idx)),
            ),
        )
    for k in want:  # bf16 products; the bias sums run in fp32 in the replay (measured max ~3e-3 relative)
        scale = want[k].abs().max().item() + 1e-12
        assert (got[k] - want[k]).abs().max().item() / scale < 2e-2, k


def test_replay_refuses_a_tape_from_another_view():
    m, images, tokens = _model_and_inputs(n=4)
    rec = activation_reuse.Recorder()
    with torch.no_grad():
        m.encode_image(images, 2, rec)
    with pytest.raises(ValueError, match="recorded output 1 has shape"):
        m.encode_image(images, 1, activation_reuse.Replayer(rec.tape))
    with pytest.raises(ValueError, match="the tape holds 0"):
        m.encode_image(images, 1, activation_reuse.Replayer(activation_reuse.Tape()))


def test_when_reuse_is_used():
    def cfg(mode, method="jest"):
        return C.load_config("smoke", overrides=[f"learner.reuse_activations={mode}", f"select.method={method}"])

    def used(c, world=1):
        return use_reuse(c, c.learner, "cpu", Dist(rank=0, world=world))

    assert C.load_config("smoke").learner.reuse_activations == "off"  # the default, until measured on a GPU
    assert used(cfg("off")) is False
    assert used(cfg("auto")) is False  # auto: CUDA only
    assert used(cfg("on")) is True and used(cfg("on", "flexi-jest")) is True
    assert used(cfg("on", "uniform")) is False  # nothing is scored by the learner ...
    assert used(cfg("on", "easy-reference")) is False  # ... or only by the reference
    with pytest.raises(ValueError, match="reuse_activations=on needs a single process"):
        used(cfg("on"), world=2)
    assert used(cfg("auto"), world=2) is False
    with pytest.raises(ValueError, match="reuse_activations='sometimes' must be auto, on or off"):
        C.load_config("smoke", overrides=["learner.reuse_activations=sometimes"])


def test_train_flops_drop_by_the_replayed_linears():
    m, _, _ = _model_and_inputs()
    plain = train_flops(m, train_groups(16, 1))
    assert plain == 16 * 3 * m.flops_per_example()
    assert train_flops(m, train_groups(16, 1), 1) == plain - 16 * m.linear_flops_per_example(1)
    # Flexi-JEST: the full-resolution half replays its text only, the coarse half both towers
    flexi = train_flops(m, train_groups(16, 2), 2)
    want = 8 * (3 * m.flops_per_example(1) - m.linear_flops_per_example(1, image=False)) + 8 * (
        3 * m.flops_per_example(2) - m.linear_flops_per_example(2)
    )
    assert flexi == want and 0 < m.linear_flops_per_example(1) < m.flops_per_example(1)


@pytest.mark.parametrize("method", ["jest", "flexi-jest"])
def test_training_with_reuse_equals_training_without(smoke_scored, tmp_path, method):
    from jestflow.cli import main

    def run(out, mode):
        sets = ("learner.steps=4", "learner.eval_every=0", "learner.batch_size=16", f"learner.reuse_activations={mode}")
        data, scores = smoke_scored / "data" / "pool", smoke_scored / "scores"
        args = smoke_args("train", *sets, method=method, data=data, scores=scores, out=out)
        assert main(args) == 0
        return out

    a, b = run(tmp_path / "off", "off"), run(tmp_path / "on", "on")
    assert [r["uids"] for r in read_uid_log(str(a))] == [r["uids"] for r in read_uid_log(str(b))]
    ma, mb = load_model(str(a / "model.pt")), load_model(str(b / "model.pt"))
    sb = mb.state_dict()
    diff = max((v - sb[k]).abs().max().item() for k, v in ma.state_dict().items())
    assert diff < 1e-5, diff  # fp32 on CPU: same gradients up to summation order
    from jestflow import storage

    fa = storage.read_json(str(a / "train.json"))["flops"]
    fb = storage.read_json(str(b / "train.json"))["flops"]
    assert fb["scoring"] == fa["scoring"] and fb["train"] < fa["train"]
