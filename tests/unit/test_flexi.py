"""Flexi-JEST as published: scores the whole image at a larger patch size and trains a random half
of the chosen sub-batch at that low resolution; its FLOPs are charged accordingly."""

import torch

from jestflow import config as C
from jestflow.core import flops
from jestflow.core.selection import Embeds, select
from jestflow.data.shards import ReadStats, stream
from jestflow.model.tokenizer import Tokenizer
from jestflow.model.two_tower import TwoTower
from jestflow.training.batch_selectors import ScoreSelect
from jestflow.training.loader import make_batches
from jestflow.training.score_cache import ScoreCache


def test_flexi_trains_a_random_half_at_low_resolution(smoke_scored):
    cfg = C.load_config("smoke").with_method("flexi-jest")
    cache = ScoreCache(str(smoke_scored / "scores"))
    tok = Tokenizer.load(str(smoke_scored / "scores" / "tokenizer.json"))
    samples = stream(str(smoke_scored / "data" / "pool"), 0, 300, ReadStats(), cfg.model.image_size)
    batch = next(make_batches(samples, cfg.super_batch_size(), tok))
    torch.manual_seed(0)
    model = TwoTower(cfg.model, len(tok))
    picked = ScoreSelect(cfg, cache)(model, batch, torch.Generator().manual_seed(5), "cpu")

    # the same selection, replayed: same learner embeddings, same generator state
    with torch.no_grad():
        model.eval()
        u, v = model(batch.images, batch.tokens, cfg.select.flexi_stride)
    learner = Embeds(u, v, model.log_t.detach(), model.bias.detach())
    gen = torch.Generator().manual_seed(5)
    sel = select(
        "flexi-jest", learner, cache.lookup(batch.uids, batch.shards), 32, cfg.select.n_chunks, gen, kernel="torch"
    )
    drawn = [batch.uids[i] for i in sel.indices.tolist()]
    assert sorted(picked.batch.uids) == sorted(drawn)  # the same examples ...
    assert picked.batch.uids != drawn  # ... in a random order, so the low-resolution half is a random half
    half = len(drawn) // 2
    assert set(picked.batch.uids[half:]) != set(drawn[half:])


def test_flexi_costs_follow_the_low_resolution_view():
    cfg = C.load_config("smoke")
    flexi, jest = flops.step_cost(cfg.with_method("flexi-jest")), flops.step_cost(cfg.with_method("jest"))
    f1, f2 = flops.forward_per_example(cfg.model, 1), flops.forward_per_example(cfg.model, 2)
    assert flexi.scoring == 160 * f2 and jest.scoring == 160 * f1
    assert flexi.train == 16 * 3 * f1 + 16 * 3 * f2 and jest.train == 32 * 3 * f1
    assert flexi.selection == jest.selection
    # whole image at patch 2p: a quarter of the tokens, the patch embedding over a quarter of the pixels
    assert flops.image_tokens(cfg.model, 2) == flops.image_tokens(cfg.model, 1) // 4


def test_flexi_stride_must_divide_the_patch_grid():
    import pytest

    with pytest.raises(ValueError, match="select.flexi_stride=3 does not divide the image's patch grid"):
        C.load_config("smoke", None, ["select.method=flexi-jest", "select.flexi_stride=3"])
