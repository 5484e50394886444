"""Scoring fans out over pool shards (the pipeline's ParallelFor); partial caches merge into one."""

import numpy as np
import pytest

from jestflow import config as C
from jestflow import stages, storage
from jestflow.data.shards import list_shards
from jestflow.training.score_cache import ScoreCache, merge_caches, part_shards


def _score_parts(scored, tmp_path, parts):
    cfg = C.load_config("smoke")
    pool = str(scored / "data" / "pool")
    shards = list_shards(pool)
    outs = []
    for p in range(parts):
        out = str(tmp_path / f"part{p}")
        stages.score(cfg, str(scored / "ref"), pool, out, progress=False, shards=part_shards(shards, p, parts))
        outs.append(out)
    return pool, outs


def test_merged_parts_equal_one_pass(smoke_scored, tmp_path):
    pool, outs = _score_parts(smoke_scored, tmp_path, 3)
    merged = str(tmp_path / "merged")
    index = merge_caches(outs, pool, merged)
    whole = storage.read_json(str(smoke_scored / "scores" / "index.json"))
    assert index["n"] == whole["n"] == 1600 and index["parts"] == 3
    assert [e["shard"] for e in index["shards"]] == [e["shard"] for e in whole["shards"]]
    assert index["scoring_flops"] == pytest.approx(whole["scoring_flops"])
    a, b = ScoreCache(merged, pool), ScoreCache(str(smoke_scored / "scores"), pool)
    for e in index["shards"]:
        sa, sb = a.shard(e["shard"]), b.shard(e["shard"])
        assert sa.row == sb.row
        np.testing.assert_array_equal(sa.img.numpy(), sb.img.numpy())  # same model, same batches: bit-identical
        np.testing.assert_array_equal(sa.txt.numpy(), sb.txt.numpy())
    assert not list((tmp_path / "merged").glob("*.npz"))  # nothing copied: the index names the parts' files
    for e in index["shards"]:  # every column of every score file, the audit-only loss included
        merged_file = np.load(e["file"])
        whole_file = np.load(smoke_scored / "scores" / storage.basename(e["file"]))
        for k in ("uids", "img", "txt", "loss"):
            np.testing.assert_array_equal(merged_file[k], whole_file[k])


def test_more_parts_than_shards_leave_empty_parts_that_merge(smoke_scored, tmp_path):
    pool, outs = _score_parts(smoke_scored, tmp_path, 10)  # the smoke pool has 8 shards
    assert storage.read_json(outs[9] + "/index.json")["n"] == 0
    assert merge_caches(outs, pool, str(tmp_path / "merged"))["n"] == 1600


def test_merge_refuses_gaps_and_overlaps(smoke_scored, tmp_path):
    pool, outs = _score_parts(smoke_scored, tmp_path, 2)
    with pytest.raises(ValueError, match="do not cover pool .*not scored \\['pool-00001.tar'"):
        merge_caches(outs[:1], pool, str(tmp_path / "m1"))
    with pytest.raises(ValueError, match="scored twice"):
        merge_caches([outs[0], outs[0], outs[1]], pool, str(tmp_path / "m2"))
    with pytest.raises(ValueError, match="has no index.json"):
        merge_caches([outs[0], str(tmp_path / "nothing")], pool, str(tmp_path / "m3"))
    assert not storage.exists(str(tmp_path / "m1" / "index.json"))  # nothing that looks complete


def test_part_shards_round_robin_and_bounds():
    shards = [f"s{i}" for i in range(5)]
    assert [part_shards(shards, p, 2) for p in range(2)] == [["s0", "s2", "s4"], ["s1", "s3"]]
    with pytest.raises(ValueError, match="score part 2 is not in 0..1"):
        part_shards(shards, 2, 2)
    assert part_shards(shards[:1], 1, 2) == []  # more parts than shards: an empty part, not an error
