import json
from collections import Counter

import pytest

from jestflow.config import DemoConfig
from jestflow.data.demo import CLASSES, COLORS, NOISE_TYPES, make_demo
from jestflow.data.shards import iter_split
from jestflow.data.synthetic import JUNK_CAPTIONS


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(n_curated=60, n_pool=600, n_eval=40, shard_size=100, seed=5)
    make_demo(str(out), cfg)
    return out, cfg


def test_splits_and_noise_records(demo):
    out, cfg = demo
    pool = list(iter_split(str(out / "pool")))
    assert len(pool) == 600 and len(list(iter_split(str(out / "curated")))) == 60
    noise = Counter(s.meta["noise"] for s in pool)
    assert set(noise) <= set(NOISE_TYPES)
    for kind, frac in cfg.noise_mix().items():
        assert abs(noise[kind] / 600 - frac) < 0.06, kind
    assert all(s.meta["noise"] == "clean" for s in iter_split(str(out / "curated")))
    junk = [s.caption for s in pool if s.meta["noise"] == "junk-caption"]
    assert junk and set(junk) <= set(JUNK_CAPTIONS)


def test_eval_has_classes_and_labels(demo):
    out, _ = demo
    classes = json.loads((out / "eval" / "classes.json").read_text())
    assert len(classes["classes"]) == 10 and all("{}" in t for t in classes["templates"])
    labels = {s.meta["label"] for s in iter_split(str(out / "eval"))}
    assert labels <= set(range(10)) and len(labels) >= 5


def test_deterministic_per_seed(demo, tmp_path):
    out, cfg = demo
    make_demo(str(tmp_path), cfg)
    a = [(s.uid, s.caption, s.image.tobytes()) for s in iter_split(str(out / "pool"))]
    b = [(s.uid, s.caption, s.image.tobytes()) for s in iter_split(str(tmp_path / "pool"))]
    assert a == b


def test_bad_ratios_rejected(tmp_path):
    with pytest.raises(ValueError, match="add up to"):
        make_demo(str(tmp_path), DemoConfig(mismatch=0.9, junk_caption=0.5))


def test_longtail_pool_is_skewed_and_eval_balanced(tmp_path):
    """fashion-longtail: `head_concepts` (class, colour) pairs make up `head_share` of curated and pool;
    eval is balanced (head = head_concepts / 80 of it); every sample records its group."""
    from jestflow.data.shards import iter_split

    cfg = DemoConfig(dataset="fashion-longtail", n_curated=400, n_pool=2000, n_eval=800, shard_size=500, seed=3)
    summary = make_demo(str(tmp_path), cfg)
    assert len(summary["head_concepts"]) == 8

    def head_share(split, noise=None):
        meta = [s.meta for s in iter_split(str(tmp_path / split))]
        meta = [m for m in meta if noise is None or m["noise"] == noise]
        return sum(m["group"] == "head" for m in meta) / len(meta)

    assert abs(head_share("curated") - 0.6) < 0.05
    assert abs(head_share("pool", noise="clean") - 0.6) < 0.05
    assert abs(head_share("eval") - 8 / 80) < 0.04
    heads = {tuple(h.split("/")) for h in summary["head_concepts"]}
    for s in iter_split(str(tmp_path / "curated")):  # the caption names the concept its group says
        cls = next(c for c in CLASSES if f" {c}" in f" {s.caption}")
        color = next(c for c in COLORS if f" {c} " in f" {s.caption} ")
        assert ((cls, color) in heads) == (s.meta["group"] == "head"), s.caption
