"""The training step returns its measurements (loss, gradient norm, learning rate); the loop logs them
per step in the uid log and exports them as metrics."""

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
