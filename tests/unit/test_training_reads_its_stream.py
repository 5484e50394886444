"""The training loop's data path, through `train()` itself: a fresh run reads its stream as a fresh run
(decoding in the decode pool, bad images skipped and counted), not in the replay mode a resumed run
uses while it skips what earlier attempts trained on."""

import threading

import numpy as np

import jestflow.data.shards as data
from jestflow import stages
from jestflow.config import load_config
from jestflow.data.shards import ShardWriter
from jestflow.model.tokenizer import Tokenizer
from shards import members, write_tar


def _pool(folder, shards=4, per_shard=40):
    rng = np.random.default_rng(0)
    for s in range(shards):
        with ShardWriter(str(folder), f"p{s}", per_shard) as w:
            for i in range(per_shard):
                w.write(f"p{s}-{i:03d}", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), f"a photo {i % 7}")
    return folder


def _truncate_one_image_per_shard(folder):
    """The 5th sample of every shard gets a PNG cut in half: its header reads, its pixels do not."""
    for shard in sorted(folder.glob("*.tar")):
        items = members(shard)
        name, png = items[12]  # members go png, txt per sample: the 7th sample's image
        assert name.endswith(".png")
        items[12] = (name, png[: len(png) // 2])
        write_tar(shard, items)


def test_a_broken_image_met_after_the_first_step_is_skipped_and_decoded_in_the_pool(tmp_path, monkeypatch):
    """Was: after the first step every run read its stream in "resume" mode (`skipped < state.consumed`
    turned true as soon as a step was counted), so shards begun later skipped the decode pool, decoded
    on the prefetch thread, and a truncated image crashed the run with `OSError: image file is
    truncated` naming no shard or uid."""
    pool = _pool(tmp_path / "pool")
    _truncate_one_image_per_shard(pool)
    threads = []
    pixels = data._pixels

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return pixels(*args, **kwargs)

    monkeypatch.setattr(data, "_pixels", recording)
    cfg = load_config(
        "smoke",
        None,
        [
            "select.method=uniform",
            "learner.steps=12",  # 384 samples drawn: more than two passes over the 160-sample pool
            "learner.batch_size=32",
            "learner.shuffle_buffer=8",  # so shards are begun after the first step, not all before it
            "learner.eval_every=0",
            "learner.decode_workers=2",
            "learner.decode_mode=thread",
            "learner.max_bad_fraction=0.1",
        ],
    )
    vocab = tmp_path / "vocab"
    Tokenizer.build([f"a photo {i}" for i in range(7)], cfg.model.context_length).save(str(vocab / "tokenizer.json"))
    summary = stages.train_learner(cfg, str(pool), str(tmp_path / "run"), tokenizer_from=str(vocab), progress=False)
    assert summary["steps"] == 12
    assert summary["skipped"].get("undecodable-image", 0) >= 4  # one per shard, counted, the run went on
    outside = [t for t in threads if not t.startswith("jestflow-decode")]
    assert threads and not outside, f"{len(outside)} of {len(threads)} images decoded outside the decode pool"
