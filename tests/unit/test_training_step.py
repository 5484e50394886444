"""The training step returns its measurements (loss, gradient norm, learning rate); the loop logs them
per step in the uid log and exports them as metrics."""

import pytest

from jestflow import stages
from jestflow.config import load_config
from jestflow.platform.metrics import StageMetrics
from jestflow.training.loop import read_uid_log
from shards import tiny_split, tiny_tokenizer


def test_each_step_reports_loss_gradient_norm_and_learning_rate(tmp_path):
    pool, vocab = tiny_split(tmp_path / "pool", shards=2), tiny_tokenizer(tmp_path)
    sets = ["select.method=uniform", "learner.steps=4", "learner.batch_size=16", "learner.eval_every=0",
            "learner.shuffle_buffer=8", "learner.optim.warmup_steps=2", "learner.optim.grad_clip=0.01"]  # fmt: skip
    cfg = load_config("smoke", None, sets)
    metrics = StageMetrics("learner", "uniform", run_id="r")  # no gateway: the registry alone
    out = tmp_path / "run"
    stages.train_learner(cfg, str(pool), str(out), tokenizer_from=str(vocab), progress=False, metrics=metrics)
    rows = read_uid_log(str(out))
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and all(len(r["uids"]) == 16 for r in rows)
    # the learning rate each step used: warmup 1/2, 2/2 of the peak, then the cosine down from it
    peak = cfg.learner.optim.lr
    assert [round(r["lr"] / peak, 6) for r in rows[:3]] == [0.5, 1.0, 1.0] and rows[3]["lr"] < peak
    # the norm before clipping: far above the clip threshold on a fresh model
    assert all(r["grad_norm"] > 10 * cfg.learner.optim.grad_clip for r in rows)
    assert all(r["loss"] > 0 for r in rows)
    assert metrics.value("jestflow_train_grad_norm") == rows[-1]["grad_norm"]
    assert metrics.value("jestflow_train_loss") == rows[-1]["loss"]
    assert metrics.value("jestflow_train_learning_rate") == rows[-1]["lr"]


def test_the_run_records_its_group_mix_and_the_last_evaluation_keeps_every_query(tmp_path):
    """On data that records groups (fashion-longtail): the mix trained on per evaluation window and over
    the run, R@1 per group, and each query's outcome at the last point (what bench intervals resample)."""
    from jestflow.data.demo import make_demo
    from jestflow.training.evaluation import unpack_hits

    sets = ["demo.dataset=fashion-longtail", "demo.n_curated=64", "demo.n_pool=160", "demo.n_eval=48",
            "demo.shard_size=80", "select.method=uniform", "learner.steps=4", "learner.batch_size=16",
            "learner.eval_every=2", "learner.shuffle_buffer=16"]  # fmt: skip
    cfg = load_config("smoke", None, sets)
    make_demo(str(tmp_path / "d"), cfg.demo)
    d = tmp_path / "d"
    s = stages.train_learner(cfg, str(d / "pool"), str(tmp_path / "run"), eval_uri=str(d / "eval"), progress=False)
    assert set(s["group_mix"]) == {"head", "tail"} and abs(sum(s["group_mix"].values()) - 1) < 1e-9
    assert [sum(p["groups_window"].values()) for p in s["curve"]] == [32, 32]
    last = s["curve"][-1]
    assert {"retrieval_r1_head", "retrieval_r1_tail"} <= set(last) and last["retrieval_chance"] == 1 / 48
    i2t, t2i = (unpack_hits(last["query_hits"][k], 48) for k in ("i2t", "t2i"))
    assert (i2t.mean() + t2i.mean()) / 2 == pytest.approx(last["retrieval_r1"], abs=1e-6)
    assert "query_hits" not in s["curve"][0]  # only the last point keeps them
