"""The training loop's data path, through `train()` itself: a fresh run reads its stream as a fresh run
(decoding in the decode pool, bad images skipped and counted), not in the replay mode a resumed run
uses while it skips what earlier attempts trained on."""

import threading

import jestflow.data.shards as data
from jestflow import stages
from jestflow.config import load_config
from shards import members, tiny_split, tiny_tokenizer, write_tar


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
    pool = tiny_split(tmp_path / "pool")
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
    vocab = tiny_tokenizer(tmp_path)
    summary = stages.train_learner(cfg, str(pool), str(tmp_path / "run"), tokenizer_from=str(vocab), progress=False)
    assert summary["steps"] == 12
    assert summary["skipped"].get("undecodable-image", 0) >= 4  # one per shard, counted, the run went on
    outside = [t for t in threads if not t.startswith("jestflow-decode")]
    assert threads and not outside, f"{len(outside)} of {len(threads)} images decoded outside the decode pool"
