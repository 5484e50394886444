"""Every kind of bad input gives a clear error naming the file, uid or value, and leaves no output
that looks complete; per-sample problems are skipped, counted and reported instead."""

import json
import random
import shutil
import signal

import pytest

from cli import smoke_args
from jestflow.cli import main
from jestflow.data.shards import ReadStats, iter_shard
from shards import members, write_tar

SMOKE = ["--preset", "smoke", "--quiet"]


def pool_copy(root, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(root / "data" / "pool", pool)
    return pool


def corrupt_tar(pool):
    shard = sorted(pool.glob("*.tar"))[3]
    shard.write_bytes(b"\x00garbage" * 300)
    return shard.name


def truncated_tar(pool):
    shard = sorted(pool.glob("*.tar"))[2]
    shard.write_bytes(shard.read_bytes()[:5000])
    return shard.name


def duplicate_uid(pool):
    shard = sorted(pool.glob("*.tar"))[1]
    items = members(shard)
    write_tar(shard, items + items[:2])
    return items[0][0].split(".")[0]


def unsafe_member(pool):
    shard = sorted(pool.glob("*.tar"))[0]
    write_tar(shard, members(shard) + [("../../etc/evil.png", b"x")])
    return "../../etc/evil.png"


def empty_split(pool):
    for f in pool.glob("*.tar"):
        f.unlink()
    return str(pool)


def broken_samples(pool, frac):
    """Undecodable images and empty, missing and absurdly long captions on a fraction of samples."""
    rng = random.Random(0)
    for shard in sorted(pool.glob("*.tar")):
        out = []
        for name, data in members(shard):
            uid, ext = name.split(".", 1)
            h = rng.random()
            if h < frac / 4 and ext == "png":
                data = b"not an image"
            elif frac / 4 <= h < frac / 2 and ext == "txt":
                data = b""
            elif frac / 2 <= h < 3 * frac / 4 and ext == "txt":
                data = b"word " * 5000
            elif 3 * frac / 4 <= h < frac and ext == "txt":
                continue
            out.append((name, data))
        write_tar(shard, out)


def train_args(root, pool, out, *extra):
    return [
        "train",
        "--data",
        str(pool),
        "--scores",
        str(root / "scores"),
        "--out",
        str(out),
        *SMOKE,
        "--set",
        "learner.steps=3",
        "--set",
        "learner.eval_every=0",
        *extra,
    ]


@pytest.mark.parametrize(
    "make,expect",
    [
        pytest.param(corrupt_tar, "{x}: not a readable tar file", id="corrupt-tar"),
        pytest.param(truncated_tar, "{x}: truncated tar: ", id="truncated-tar"),
        pytest.param(duplicate_uid, "duplicate uid '{x}'", id="duplicate-uid"),
        pytest.param(unsafe_member, "refusing unsafe tar member name '{x}'", id="unsafe-member"),
        pytest.param(empty_split, "no .tar shards in {x}", id="empty-split"),
    ],
)
def test_bad_shards_fail_with_a_clear_message(smoke_scored, tmp_path, capsys, make, expect):
    pool = pool_copy(smoke_scored, tmp_path)
    x = make(pool)
    # scoring reads every shard: it refuses, naming the problem
    assert main(smoke_args("score", reference=smoke_scored / "ref", data=pool, out=tmp_path / "scores")) == 2
    assert expect.format(x=x) in capsys.readouterr().err
    assert not (tmp_path / "scores" / "index.json").exists()  # no index: the cache does not look complete
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize(
    "override,message",
    [
        pytest.param("learner.steps=-5", "learner.steps=-5 must be positive", id="negative-steps"),
        pytest.param("select.filter_ratio=1.2", "select.filter_ratio=1.2 must be in (0, 1)", id="ratio-outside"),
        pytest.param(
            "learner.batch_size=30",
            "learner.batch_size=30 is not divisible by select.n_chunks=4",
            id="indivisible-batch",
        ),
        pytest.param("select.method=magic", "select.method='magic' is not one of", id="unknown-method"),
    ],
)
def test_nonsense_configuration(smoke_scored, tmp_path, capsys, override, message):
    out = tmp_path / "out"
    assert main(train_args(smoke_scored, smoke_scored / "data" / "pool", out, "--set", override)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # rejected before anything was written


def test_cache_that_does_not_match_the_pool(smoke_scored, tmp_path, capsys):
    pool = pool_copy(smoke_scored, tmp_path)
    shard = sorted(pool.glob("*.tar"))[0]
    write_tar(shard, members(shard)[:-3])  # drop a sample: the pool changed after scoring
    out = tmp_path / "out"
    assert main(train_args(smoke_scored, pool, out)) == 2
    err = capsys.readouterr().err
    assert "does not match pool" in err and shard.name in err
    assert not (out / "train.json").exists() and not (out / "model.pt").exists()


def test_per_sample_problems_are_skipped_counted_and_reported(smoke_scored, tmp_path):
    pool = pool_copy(smoke_scored, tmp_path)
    broken_samples(pool, frac=0.02)
    ref = smoke_scored / "ref"
    args = smoke_args("score", "reference.max_bad_fraction=0.05", reference=ref, data=pool, out=tmp_path / "s")
    assert main(args) == 0
    skipped = json.loads((tmp_path / "s" / "index.json").read_text())["skipped"]
    assert set(skipped) == {"undecodable-image", "empty-caption", "caption-too-long", "missing-caption"}
    sets = ("learner.steps=3", "learner.eval_every=0", "learner.max_bad_fraction=0.05")
    args = smoke_args("train", *sets, method="jest", data=pool, scores=tmp_path / "s", out=tmp_path / "t")
    assert main(args) == 0
    assert sum(json.loads((tmp_path / "t" / "train.json").read_text())["skipped"].values()) > 0


def test_too_many_bad_samples_fail_the_stage(smoke_scored, tmp_path, capsys):
    pool = pool_copy(smoke_scored, tmp_path)
    broken_samples(pool, frac=0.3)
    assert main(smoke_args("score", reference=smoke_scored / "ref", data=pool, out=tmp_path / "s")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pool {pool}: " in err and "samples are bad" in err
    assert "more than max_bad_fraction=0.01" in err
    assert not (tmp_path / "s" / "index.json").exists()


def test_fuzzed_shards_give_a_clean_error_or_skips_never_a_crash_or_hang(smoke_scored, tmp_path):
    original = sorted((smoke_scored / "data" / "pool").glob("*.tar"))[0].read_bytes()
    rng = random.Random(1234)

    def timeout(*_):
        raise TimeoutError("reader hung")

    old = signal.signal(signal.SIGALRM, timeout)
    try:
        for i in range(60):
            data = bytearray(original)
            kind = i % 3
            if kind == 0:  # flip random bytes
                for _ in range(rng.randint(1, 50)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            elif kind == 1:  # truncate
                data = data[: rng.randrange(len(data))]
            else:  # splice in junk
                at = rng.randrange(len(data))
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
            path = tmp_path / f"fuzz{i}.tar"
            path.write_bytes(bytes(data))
            signal.alarm(10)
            try:
                n = sum(1 for _ in iter_shard(str(path), ReadStats(max_bad_fraction=1.0)))
                assert n >= 0
            except ValueError as e:
                assert "fuzz" in str(e)  # names the file
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("content", ["{}", '{"rows": 3}', "[]"])
def test_report_on_results_that_are_not_a_runs_is_one_line(tmp_path, capsys, content):
    """Issue 27: `jestflow report` on an empty results.json ended in KeyError: 'rows'."""
    (tmp_path / "results.json").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.json: not the results of a jestflow run (no 'rows')" in err[0], err


def test_report_on_a_hand_run_training_says_how_to_get_a_page(tmp_path, capsys):
    """Issue 27 (6): `jestflow report` on a hand-run stage's folder said only "no such file"."""
    (tmp_path / "train.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds one hand-run training run" in err[0] and "jestflow run --curated" in err[0]


def test_a_truncated_curation_table_names_its_file(tmp_path, capsys):
    """Issue 27: `jestflow report` on a run whose curation.parquet was cut short: pyarrow's error named
    no file. Now one line with the file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"uid": np.arange(500).astype(str)}), str(tmp_path / "whole.parquet"))
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "curation.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "results.json").write_text(json.dumps({"rows": []}))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'curation.parquet'}: not a readable Parquet file" in err[0], err


def test_a_split_smaller_than_a_batch_is_said(tmp_path, capsys):
    """Issue 27: a batch larger than the split trained on repeats without a word."""
    import numpy as np

    from jestflow.data.shards import ShardWriter

    with ShardWriter(str(tmp_path / "tiny"), "t", 100) as w:
        for i in range(10):
            w.write(f"t{i}", np.full((8, 8, 3), 20 * i, np.uint8), f"a red shirt number {i}", {"label": 0})
    args = smoke_args("train-reference", "reference.steps=1", "reference.batch_size=16", "reference.eval_every=0",
                      data=tmp_path / "tiny", out=tmp_path / "ref")  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "reference: warning: a batch of 16 from" in err and "holds only 10 distinct samples" in err


def test_a_finished_run_is_not_trained_or_written_again(smoke_scored, tmp_path, capsys):
    """Issue 27: rerunning a finished command retrained (minutes) and rewrote model.pt. Now it says the
    folder holds that run and returns at once; another configuration is refused as before."""
    args = smoke_args("train-reference", "reference.steps=2", "reference.eval_every=0",
                      data=smoke_scored / "data" / "curated", out=tmp_path / "ref")  # fmt: skip
    assert main(args) == 0
    model = tmp_path / "ref" / "model.pt"
    before = (model.stat().st_mtime_ns, model.read_bytes())
    capsys.readouterr()
    assert main(args) == 0
    assert "already holds this run, finished" in capsys.readouterr().out
    assert (model.stat().st_mtime_ns, model.read_bytes()) == before
    other = smoke_args("train-reference", "reference.steps=3", "reference.eval_every=0",
                       data=smoke_scored / "data" / "curated", out=tmp_path / "ref")  # fmt: skip
    assert main(other) == 2
    assert "holds a run made with another configuration" in capsys.readouterr().err


def test_a_run_interrupted_across_an_upgrade_that_added_a_setting_resumes(tmp_path):
    """Was: config.yaml was compared as text, so a checkpoint written before an upgrade added a setting
    (`learner.init_from`, 2026-12) was refused as "another configuration" (two long-tail benchmark runs
    were lost to it). Now the file is read as a configuration: a missing setting takes its default; a
    changed value, or a setting this version does not know, still refuses."""
    from jestflow import config as C
    from jestflow.stages import _write_config

    cfg = C.load_config("smoke")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"a checkpoint")
    current = C.dump(cfg)
    older = "\n".join(ln for ln in current.splitlines() if "init_from" not in ln) + "\n"
    assert older != current
    (run / "config.yaml").write_text(older)
    _write_config(cfg, str(run))  # resumes
    assert (run / "config.yaml").read_text() == current
    for text in (current.replace("seed: 0", "seed: 5"), current + "extra_section: {a: 1}\n"):
        (run / "config.yaml").write_text(text)
        with pytest.raises(ValueError, match="holds a run made with another configuration"):
            _write_config(cfg, str(run))
        assert (run / "config.yaml").read_text() == text  # refused before anything was touched


def test_data_without_noise_types_gives_null_not_nan(tmp_path, capsys):
    """Issue 27 (5). Was: users' data records no noise types, so `clean_fraction` was NaN: written into
    train.json and evaluate's JSON (not JSON: a strict reader refuses it) and printed as "nan". Now null,
    and "n/a" for people."""
    from shards import tiny_split

    tiny_split(tmp_path / "split", shards=2, per_shard=20)
    sets = ("learner.steps=2", "learner.eval_every=0", "learner.batch_size=8")
    assert main(smoke_args("train", *sets, method="uniform", data=tmp_path / "split", out=tmp_path / "run")) == 0
    assert "clean fraction n/a" in capsys.readouterr().out
    text = (tmp_path / "run" / "train.json").read_text()
    assert "NaN" not in text and json.loads(text)["clean_fraction"] is None
    assert main(smoke_args("evaluate", model=tmp_path / "run", data=tmp_path / "split", out=tmp_path / "e.json")) == 0
    text = (tmp_path / "e.json").read_text()
    assert "NaN" not in text and json.loads(text)["clean_fraction"] is None


@pytest.mark.parametrize("command", ["uniform", "train-reference"])
def test_a_uid_repeated_across_shards_stops_uniform_training_too(tmp_path, capsys, command):
    """Issue 27 (5). Was: only `score` and `data check` caught a uid in two shards; uniform `train` and
    `train-reference` (which need no score cache) trained on it twice without a word."""
    from shards import tiny_split

    split = tmp_path / "split"
    tiny_split(split, shards=3, per_shard=10)
    a, b = sorted(split.glob("*.tar"))[:2]
    uid = members(a)[0][0].split(".")[0]
    write_tar(b, members(b) + [m for m in members(a) if m[0].split(".")[0] == uid])  # a's first sample, again in b
    sets = ("learner.steps=3", "learner.eval_every=0", "learner.batch_size=8", "reference.steps=3",
            "reference.eval_every=0", "reference.batch_size=8")  # fmt: skip
    args = (smoke_args("train", *sets, method="uniform", data=split, out=tmp_path / "r") if command == "uniform"
            else smoke_args("train-reference", *sets, data=split, out=tmp_path / "r"))  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"duplicate uid '{uid}' in shards" in err[0] and a.name in err[0], err
