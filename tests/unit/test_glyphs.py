"""The second dataset: font glyphs (matplotlib's DejaVu and STIX faces) with their Unicode names."""

import json
import unicodedata
from dataclasses import replace

import numpy as np

from jestflow.config import load_config
from jestflow.data.demo import make_demo
from jestflow.data.glyphs import CLASSES, CONFUSABLES, FACES, Renderer, label_of
from jestflow.data.shards import ReadStats, iter_split


def test_glyph_splits_are_real_pairs_with_the_requested_noise(tmp_path):
    cfg = replace(
        load_config("smoke", None, ["demo.dataset=glyphs"]).demo, n_curated=60, n_pool=400, n_eval=50, shard_size=100
    )
    summary = make_demo(str(tmp_path), cfg)
    assert summary["characters"]["confusable_sets"] >= 20 and summary["characters"]["letters"] > 300
    pool = list(iter_split(str(tmp_path / "pool"), ReadStats(), cfg.image_size))
    kinds = {s.meta["noise"] for s in pool}
    assert kinds == {"clean", "mismatch", "hard-negative", "tofu", "off-distribution", "junk-caption", "near-duplicate"}
    names = {unicodedata.name(chr(cp)).lower() for cp in range(0x20, 0x2900) if unicodedata.name(chr(cp), "")}
    faces = {words for _, words in FACES}
    for s in pool:
        if s.meta["noise"] in ("clean", "hard-negative", "off-distribution", "near-duplicate"):
            name, face = s.caption.rsplit(", ", 1)
            assert name in names and face in faces, s.caption  # a real Unicode name, one of the faces
    curated = list(iter_split(str(tmp_path / "curated"), ReadStats(), cfg.image_size))
    assert {s.meta["noise"] for s in curated} == {"clean"}
    ev = list(iter_split(str(tmp_path / "eval"), ReadStats(), cfg.image_size))
    held_out = {words for _, words in FACES[-2:]}
    assert all(s.caption.rsplit(", ", 1)[1] in held_out for s in ev)  # eval uses faces training never sees
    assert all(0 <= s.meta["label"] < len(CLASSES) for s in ev)
    assert json.loads((tmp_path / "eval" / "classes.json").read_text())["classes"] == list(CLASSES)


def test_confusable_letters_render_alike_across_scripts():
    """The hard negatives are hard: Latin, Greek and Cyrillic capital A look the same in these faces."""
    r = Renderer(32, np.random.default_rng(0))

    def shape(ch, face):  # the glyph's ink mask: shades of ink and background vary per sample
        x = r.draw(ch, face)[:, :, 0].astype(float)
        return (x - x.min()) / (x.max() - x.min())

    for face, _ in FACES[:3]:
        a = [shape(ch, face) for ch in "AΑА"]
        same = max(np.abs(x - a[0]).mean() for x in a[1:])
        assert same < 0.02 < np.abs(shape("B", face) - a[0]).mean()
    assert [label_of(unicodedata.name(c)) for c in "AΑА7"] == [0, 1, 2, CLASSES.index("digit")]
    assert all(len(s) >= 2 for s in CONFUSABLES)
