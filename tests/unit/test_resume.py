"""Preemption safety: a training run killed with SIGKILL resumes from its checkpoint and ends with
exactly the metrics of an uninterrupted run; SIGTERM writes a checkpoint before exiting."""

import json
import signal
import subprocess
import sys
import time

import torch

ARGS = [
    "--method",
    "jest",
    "--preset",
    "smoke",
    "--quiet",
    "--set",
    "learner.steps=40",
    "--set",
    "learner.checkpoint_every=5",
    "--set",
    "learner.eval_every=10",
    "--set",
    "learner.threads=1",
]


def cmd(root, out):
    return [
        sys.executable,
        "-m",
        "jestflow",
        "train",
        "--data",
        str(root / "data" / "pool"),
        "--scores",
        str(root / "scores"),
        "--eval",
        str(root / "data" / "eval"),
        "--out",
        str(out),
        *ARGS,
    ]


def checkpoint_step(out):
    try:
        return torch.load(out / "checkpoint.pt", weights_only=False)["state"]["step"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def start_and_interrupt(root, out, sig, min_step=10):
    p = subprocess.Popen(cmd(root, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while checkpoint_step(out) < min_step:
        assert p.poll() is None, p.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    return p.returncode, stderr


def comparable(out):
    s = json.loads((out / "train.json").read_text())
    return {k: s[k] for k in ("steps", "examples_seen", "flops", "noise_mix", "curve")}


def test_sigkill_then_resume_matches_uninterrupted(smoke_scored, tmp_path):
    root = smoke_scored
    straight = tmp_path / "straight"
    assert subprocess.run(cmd(root, straight), capture_output=True).returncode == 0
    resumed = tmp_path / "resumed"
    code, _ = start_and_interrupt(root, resumed, signal.SIGKILL)
    assert code == -signal.SIGKILL and not (resumed / "train.json").exists()
    killed_at = checkpoint_step(resumed)
    assert 10 <= killed_at < 40
    again = subprocess.run(cmd(root, resumed), capture_output=True, text=True)
    assert again.returncode == 0
    assert f"learner: resuming from step {killed_at} of 40" in again.stdout  # said even under --quiet
    assert comparable(resumed) == comparable(straight)
    # the uid log is complete and identical too
    from jestflow.training.loop import read_uid_log

    assert read_uid_log(str(resumed)) == read_uid_log(str(straight))
    assert not list(resumed.rglob("*.partial"))  # no half-written file left behind


def test_sigterm_writes_a_checkpoint_and_exits(smoke_scored, tmp_path):
    out = tmp_path / "term"
    code, stderr = start_and_interrupt(smoke_scored, out, signal.SIGTERM, min_step=5)
    assert code != 0 and "SIGTERM received; checkpoint written at step" in stderr
    step = int(stderr.split("checkpoint written at step")[1].split(",")[0])
    assert checkpoint_step(out) == step >= 5 and not (out / "train.json").exists()
    assert subprocess.run(cmd(smoke_scored, out), capture_output=True).returncode == 0
    assert json.loads((out / "train.json").read_text())["steps"] == 40


def test_resumed_stream_replays_without_decoding_and_takes_the_same_course(smoke_scored, tmp_path, monkeypatch):
    """Issue 16: a resumed run skipped ahead by decoding every sample already trained on (O(steps x N)
    decodes). Now the skipped samples are replayed with every check but the pixel decode, the uids
    earlier attempts found undecodable standing in for it: the same samples follow, in the same order,
    and only the ones still in the shuffle buffer are ever decoded."""
    import shutil

    import jestflow.data.shards as reader
    from shards import members, write_tar

    pool = tmp_path / "pool"
    shutil.copytree(smoke_scored / "data" / "pool", pool)
    broken = set()
    for shard in sorted(pool.glob("*.tar")):  # one undecodable image in every shard
        items = members(shard)
        name = [n for n, _ in items if n.endswith(".png")][7]
        broken.add(name.split(".")[0])
        write_tar(shard, [(n, b"not a png" if n == name else d) for n, d in items])

    decodes = {"n": 0}
    real = reader._pixels

    def counting(*a):
        decodes["n"] += 1
        return real(*a)

    monkeypatch.setattr(reader, "_pixels", counting)
    skip, buffer, tail = 1000, 100, 50

    first = reader.ReadStats(max_bad_fraction=1.0)
    straight = reader.stream(str(pool), seed=3, shuffle_buffer=buffer, stats=first, epochs=1)
    expected = [s.uid for s, _ in zip(straight, range(skip + tail))]
    assert first.undecodable and set(first.undecodable) <= broken  # what a checkpoint records

    decodes["n"] = 0
    skipped = 0
    stats = reader.ReadStats(max_bad_fraction=1.0)
    resumed = reader.stream(
        str(pool), seed=3, shuffle_buffer=buffer, stats=stats, epochs=1,
        replaying=lambda: skipped < skip, undecodable=set(first.undecodable),
    )  # fmt: skip
    for _ in range(skip):
        next(resumed)
        skipped += 1
    assert decodes["n"] == 0  # nothing skipped was decoded
    after = [next(resumed).uid for _ in range(tail)]
    assert after == expected[skip:]  # the same course as the uninterrupted stream
    assert decodes["n"] <= buffer + tail + 1  # only what is still to be trained on
    assert stats.skipped == first.skipped  # counted as before
