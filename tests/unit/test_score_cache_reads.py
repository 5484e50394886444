"""The score cache is read shard by shard: a reader fetches only the score files of the pool shards it
looks up, keeps a bounded number in memory, and finds the offline filter's threshold from the index
alone. (At paper scale the cache is ~31 TB, docs/scale.md: a step that read it whole would not run.)"""

import numpy as np
import pytest
import torch

from jestflow.training.score_cache import CLIP_BINS, ScoreCache


def _uids(cache: ScoreCache, name: str, k: int) -> list[str]:
    return list(cache.shard(name).row)[:k]


def test_a_reader_fetches_only_the_shards_it_looks_up(smoke_scored):
    cache = ScoreCache(str(smoke_scored / "scores"), keep=2)
    names = sorted(cache.entries)
    assert len(names) == 8 and cache.files_read == 0  # opening reads the index only
    probe = ScoreCache(str(smoke_scored / "scores"))
    picked = {n: _uids(probe, n, 5) for n in names[:3]}
    for n, uids in picked.items():
        cache.lookup(uids, [n] * len(uids))
    assert cache.files_read == 3 and len(cache._loaded) == 2  # 3 of 8 files read, at most `keep` held
    assert cache.bytes_read == sum(probe.shard(n).nbytes for n in names[:3])
    cache.lookup(picked[names[2]], [names[2]] * 5)  # still held: not read again
    assert cache.files_read == 3


def test_lookup_across_shards_keeps_the_given_order(smoke_scored):
    cache = ScoreCache(str(smoke_scored / "scores"))
    a, b = sorted(cache.entries)[:2]
    ua, ub = _uids(cache, a, 3), _uids(cache, b, 3)
    uids, shards = [ua[0], ub[0], ua[1], ub[1], ua[2], ub[2]], [a, b, a, b, a, b]
    got = cache.lookup(uids, shards)
    for pos, (u, s) in enumerate(zip(uids, shards)):
        sc = cache.shard(s)
        img, txt = sc.embeddings(torch.tensor([sc.row[u]]))
        torch.testing.assert_close(got.img[pos], img[0])
        torch.testing.assert_close(got.txt[pos], txt[0])


def test_a_uid_not_in_its_shard_names_uid_and_shard(smoke_scored):
    cache = ScoreCache(str(smoke_scored / "scores"))
    name = sorted(cache.entries)[0]
    with pytest.raises(ValueError, match=rf"uid 'nope' is not in score cache .* \(shard {name}\)"):
        cache.lookup(["nope"], [name])
    with pytest.raises(ValueError, match="pool shard other.tar is not in score cache"):
        cache.lookup(["nope"], ["other.tar"])


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.5, 0.9])
def test_clip_threshold_from_the_index_matches_the_scores(smoke_scored, keep):
    cache = ScoreCache(str(smoke_scored / "scores"))
    clip = np.concatenate([cache.shard(n).clip for n in cache.entries]).astype(np.float64)
    files = cache.files_read
    cut = cache.clip_threshold(keep)
    assert cache.files_read == files  # the threshold reads no score file
    kept = float((clip >= cut).mean())
    # the histogram resolves the cut to one bin: what it keeps is `keep` up to one bin's samples
    in_bin = float(((clip >= cut - 2 / CLIP_BINS) & (clip < cut)).mean())
    assert keep - 1 / len(clip) <= kept <= keep + in_bin + 1 / len(clip)


def test_a_score_file_without_clip_scores_is_named_not_recomputed(smoke_scored):
    from jestflow.training.score_cache import ShardScores

    cache = ScoreCache(str(smoke_scored / "scores"))
    name = sorted(cache.entries)[0]
    sc = cache.shard(name)
    z = {"uids": np.array(list(sc.row)), "img": sc.img.numpy(), "txt": sc.txt.numpy()}  # no "clip" array
    cache._loaded[name] = ShardScores(z, "gs://b/old/scores-0.npz", len(sc.row))
    with pytest.raises(ValueError, match=r"gs://b/old/scores-0.npz: score file without CLIP scores .* score again"):
        cache.clip_score(next(iter(sc.row)), name)
