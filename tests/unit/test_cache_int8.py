"""int8 score caches (score.dtype=int8): half the bytes of float16, and a measured selection error."""

import json

import numpy as np
import pytest
import torch

from cli import smoke_args
from jestflow import config as C
from jestflow.cli import main
from jestflow.core.selection import Embeds, select
from jestflow.data.shards import ReadStats, stream
from jestflow.model.tokenizer import Tokenizer
from jestflow.model.two_tower import TwoTower
from jestflow.training.loader import make_batches
from jestflow.training.score_cache import ScoreCache, quantize


def test_quantize_round_trip_error_is_within_half_a_step():
    x = torch.nn.functional.normalize(torch.randn(50, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    q, scale = quantize(x)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and np.abs(q).max() == 127
    back = torch.from_numpy(q).float() * torch.from_numpy(scale)[:, None]
    assert float((back - x).abs().max()) <= float(torch.from_numpy(scale).max()) / 2 + 1e-7


@pytest.fixture(scope="module")
def int8_cache(smoke_scored, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "scores"
    pool = smoke_scored / "data" / "pool"
    args = smoke_args("score", "score.dtype=int8", reference=smoke_scored / "ref", data=pool, out=out)
    assert main(args) == 0
    return out


def test_int8_cache_halves_the_embedding_bytes_and_keeps_the_cosines(smoke_scored, int8_cache):
    pool = str(smoke_scored / "data" / "pool")
    fp16, int8 = ScoreCache(str(smoke_scored / "scores"), pool), ScoreCache(str(int8_cache), pool)
    assert json.loads((int8_cache / "index.json").read_text())["embed_dtype"] == "int8"
    for name in fp16.entries:
        a, b = fp16.shard(name), int8.shard(name)
        assert b.row == a.row and b.img.dtype == torch.int8
        n, d = a.img.shape
        assert b.img.nbytes + b.img_scale.nbytes == n * (d + 4) == a.img.nbytes * (d + 4) / (2 * d)  # 53% at d=64
        rows = torch.arange(n)
        (a_img, a_txt), (b_img, b_txt) = a.embeddings(rows), b.embeddings(rows)
        cos16, cos8 = (a_img * a_txt).sum(1), (b_img * b_txt).sum(1)
        assert float((cos16 - cos8).abs().max()) < 0.01


def test_int8_cache_barely_changes_the_chosen_sets(smoke_scored, int8_cache):
    """The selection error, measured: the same learner, super-batches and Gumbel noise, reference
    embeddings from the float16 or the int8 cache; most chosen examples are the same."""
    cfg = C.load_config("smoke")
    pool = str(smoke_scored / "data" / "pool")
    fp16, int8 = ScoreCache(str(smoke_scored / "scores"), pool), ScoreCache(str(int8_cache), pool)
    tok = Tokenizer.load(str(smoke_scored / "scores" / "tokenizer.json"))
    torch.manual_seed(0)
    learner_model = TwoTower(cfg.model, len(tok)).eval()
    samples = stream(pool, 3, 300, ReadStats(), cfg.model.image_size)
    overlaps = []
    for _, batch in zip(range(10), make_batches(samples, cfg.super_batch_size(), tok)):
        with torch.no_grad():
            u, v = learner_model(batch.images, batch.tokens)
        learner = Embeds(u, v, learner_model.log_t.detach(), learner_model.bias.detach())
        chosen = [
            set(
                select(
                    "jest",
                    learner,
                    cache.lookup(batch.uids, batch.shards),
                    32,
                    4,
                    torch.Generator().manual_seed(7),
                    kernel="torch",
                ).indices.tolist()
            )
            for cache in (fp16, int8)
        ]
        overlaps.append(len(chosen[0] & chosen[1]) / 32)
    mean = sum(overlaps) / len(overlaps)
    print(f"int8 vs float16 reference cache: mean chosen-set overlap {mean:.3f} over {len(overlaps)} super-batches")
    assert mean >= 0.9
