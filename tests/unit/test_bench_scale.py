"""`make bench-scale` at toy sizes: the data path on a real GCS API (gcp-storage-emulator), each step in
its own process, score files beside the parts, the merge copying nothing, and a learner that reads
the pool and the cache by gs:// URI, fetching only the score files of the shards it trains on."""

import json
import os

import pytest

from jestflow.bench.scale import MEMORY_GROWTH_LIMIT, bench_scale, checks


@pytest.mark.slow
def test_scale_rehearsal_on_the_emulator(tmp_path):
    pytest.importorskip("google.cloud.storage")
    out = tmp_path / "scale"
    try:
        r = bench_scale(str(out), sizes=(2000, 4000), shards=(8, 16), parts=2, steps=2)
    except ValueError as e:  # the emulator is missing or did not start: a failure in CI, a skip elsewhere
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
    assert [row["samples"] for row in r["rows"]] == [2000, 4000]
    for row in r["rows"]:
        steps = row["steps"]
        assert sum(m["samples"] for m in steps["score"]) == row["samples"]  # the parts cover the pool
        assert steps["merge"][0]["samples"] == row["samples"]
        assert steps["merge"][0]["bytes_read"] < 100_000  # indexes only: no score file is read or copied
        assert all(m["peak_rss_bytes"] > 0 and m["seconds"] > 0 for ms in steps.values() for m in ms)
    big = r["rows"][1]["steps"]["learner"][0]
    # 2 steps x a 320-sample super-batch after a 2,000-sample shuffle buffer: about 10 of 16 shards
    assert 0 < big["cache_files_read"] < big["cache_files"] == 16
    assert json.loads((out / "scale.json").read_text())["checks"] == r["checks"]
    assert "| 4,000 | 16 | learner |" in (out / "scale.md").read_text()


def test_scale_checks_flag_growth_and_whole_cache_reads():
    def row(rss, read, of):
        m = {"peak_rss_bytes": rss, "cache_files_read": read, "cache_files": of}
        return {"steps": {n: [m] for n in ("write", "score", "merge", "learner")}}

    ok = checks([row(100, 1, 10), row(120, 2, 20)])
    assert ok["memory_flat"] and ok["learner_never_read_whole_cache"]
    bad = checks([row(100, 10, 10), row(100 * (MEMORY_GROWTH_LIMIT + 0.1), 2, 20)])
    assert not bad["memory_flat"] and not bad["learner_never_read_whole_cache"]
