"""The smoke-sized CLI chain: demo -> reference -> score -> learners -> evaluate, on real files."""

import json
import subprocess
import sys

import pytest

from jestflow.cli import main
from jestflow.training.loop import read_uid_log
from jestflow.training.score_cache import ScoreCache

SMOKE = ["--preset", "smoke", "--quiet"]


@pytest.fixture(scope="module")
def chain(smoke_scored):
    root = smoke_scored
    d = root / "data"
    for method in ("jest", "uniform"):
        assert (
            main(
                [
                    "train",
                    "--method",
                    method,
                    "--data",
                    str(d / "pool"),
                    "--scores",
                    str(root / "scores"),
                    "--eval",
                    str(d / "eval"),
                    "--out",
                    str(root / method),
                    *SMOKE,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(root / method),
                    "--data",
                    str(d / "eval"),
                    "--out",
                    str(root / f"{method}-eval.json"),
                    *SMOKE,
                ]
            )
            == 0
        )
    return root


def summary(root, name):
    return json.loads((root / name / "train.json").read_text())


def test_jest_batches_are_cleaner_than_uniform(chain):
    jest, uni = summary(chain, "jest"), summary(chain, "uniform")
    assert uni["clean_fraction"] == pytest.approx(0.4, abs=0.08)  # the pool's clean share
    assert jest["clean_fraction"] > uni["clean_fraction"] + 0.15
    assert jest["noise_mix"].get("junk-caption", 0) < uni["noise_mix"]["junk-caption"]
    assert jest["noise_mix"].get("mismatch", 0) < uni["noise_mix"]["mismatch"]


def test_learner_beats_chance_on_held_out_eval(chain):
    m = json.loads((chain / "jest-eval.json").read_text())
    chance = 1 / m["n"]
    assert m["i2t_r1"] > 5 * chance and m["t2i_r1"] > 5 * chance and m["i2t_r5"] > 5 * 5 * chance
    assert m["method"] == "jest" and m["steps"] == 60
    ref = json.loads((chain / "ref" / "train.json").read_text())
    assert m["total_flops"] > ref["flops_total"]  # curation's fixed costs are counted


def test_flops_accounting(chain):
    jest, uni = summary(chain, "jest"), summary(chain, "uniform")
    f = jest["forward_flops_per_example"]
    assert uni["flops"]["train"] == pytest.approx(3 * f * 32 * 60)
    assert uni["flops"]["scoring"] == 0
    assert jest["flops"]["train"] == pytest.approx(uni["flops"]["train"])
    assert jest["flops"]["scoring"] == pytest.approx(f * 160 * 60)  # N = 32 / (1 - 0.8)
    assert jest["reference_flops"] > 0 and jest["reference_scoring_flops"] > 0


def test_uid_log_records_every_step(chain):
    rows = read_uid_log(str(chain / "jest"))
    assert [r["step"] for r in rows] == list(range(60))
    assert all(len(r["uids"]) == 32 == len(set(r["uids"])) for r in rows)
    cache = ScoreCache(str(chain / "scores"))
    scored = {u for name in cache.entries for u in cache.shard(name).row}
    assert all(u in scored for r in rows for u in r["uids"])


def test_resolved_config_beside_outputs(chain):
    for name in ("ref", "jest", "uniform"):
        assert "batch_size" in (chain / name / "config.yaml").read_text()
    assert (chain / "scores" / "score-config.yaml").exists()


def test_learning_curve_recorded(chain):
    curve = summary(chain, "jest")["curve"]
    assert [p["step"] for p in curve] == [20, 40, 60]
    assert all(p["flops"] > 0 and 0 <= p["retrieval_r1"] <= 1 for p in curve)


def test_cache_that_does_not_match_pool_is_an_error(chain, tmp_path):
    other = tmp_path / "other"
    assert main(["data", "demo", "--out", str(other), *SMOKE, "--set", "demo.n_pool=300"]) == 0
    with pytest.raises(ValueError, match="does not match pool"):
        ScoreCache(str(chain / "scores"), str(other / "pool"))


def test_score_resumes_shard_by_shard(chain, tmp_path):
    import shutil

    scores = tmp_path / "scores"
    shutil.copytree(chain / "scores", scores)
    first = sorted(scores.glob("pool-*.npz"))[0]
    keep = first.read_bytes()
    (scores / "index.json").unlink()
    for f in sorted(scores.glob("pool-*.npz"))[1:]:
        f.unlink()
    first.write_bytes(keep)
    mtime = first.stat().st_mtime_ns
    assert (
        main(
            [
                "score",
                "--reference",
                str(chain / "ref"),
                "--data",
                str(chain / "data" / "pool"),
                "--out",
                str(scores),
                *SMOKE,
            ]
        )
        == 0
    )
    assert first.stat().st_mtime_ns == mtime  # the finished shard was not redone
    assert len(ScoreCache(str(scores), str(chain / "data" / "pool"))) == len(ScoreCache(str(chain / "scores")))


@pytest.mark.parametrize(
    "args,message",
    [
        pytest.param(
            ["train", "--data", "/nonexistent", "--out", "/tmp/x"], "not a folder: /nonexistent", id="missing-data"
        ),
        pytest.param(
            ["train", "--method", "jest", "--data", "{pool}", "--out", "{tmp}/o"],
            "needs a reference score cache",
            id="jest-without-scores",
        ),
        pytest.param(
            ["train", "--data", "{pool}", "--out", "{tmp}/o", "--set", "select.filter_ratio=1.5"],
            "filter_ratio=1.5",
            id="bad-ratio",
        ),
    ],
)
def test_cli_errors_are_one_line(chain, tmp_path, args, message):
    args = [a.format(pool=chain / "data" / "pool", tmp=tmp_path) for a in args]
    r = subprocess.run([sys.executable, "-m", "jestflow", *args, *SMOKE], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("jestflow: error:") and message in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("method", ["flexi-jest", "oracle", "offline-easy-reference", "independent"])
def test_other_methods_run_and_behave(chain, tmp_path, method):
    args = [
        "train",
        "--method",
        method,
        "--data",
        str(chain / "data" / "pool"),
        "--scores",
        str(chain / "scores"),
        "--out",
        str(tmp_path / method),
        *SMOKE,
        "--set",
        "learner.steps=12",
        "--set",
        "learner.eval_every=0",
    ]
    assert main(args) == 0
    s = json.loads((tmp_path / method / "train.json").read_text())
    uni = summary(chain, "uniform")
    f = uni["forward_flops_per_example"]
    if method == "oracle":
        assert s["clean_fraction"] == 1.0 and "reference_flops" not in s
    if method == "offline-easy-reference":
        assert s["clean_fraction"] > uni["clean_fraction"] + 0.1 and s["reference_flops"] > 0
        assert s["flops"]["scoring"] == 0
    if method == "flexi-jest":
        # scoring at stride 2 sees a quarter of the patches: well under the full forward's cost
        assert s["flops"]["scoring"] < 0.8 * f * 160 * 12
        assert s["flops"]["train"] < 3 * f * 32 * 12
        assert s["clean_fraction"] > uni["clean_fraction"]
    if method == "independent":
        assert s["flops"]["scoring"] == pytest.approx(f * 160 * 12)
