import json
from collections import Counter

import pytest

from jestflow.config import DemoConfig
from jestflow.data.demo import NOISE_TYPES, make_demo
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
