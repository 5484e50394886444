"""The curation as data: for every pool example, the reference's and the final learner's score, its
learnability and how often the learner's selection chose it (`jestflow export`, and the input of the
HTML report's galleries).

Scores are per-example losses (`losses.per_example_loss`: an example's share of its batch's pairwise
loss). Under the sigmoid loss that share depends on the batch, so both models are scored on the *same*
batches: the pool in shard order, `batch_size` examples at a time, the reference from its cached
embeddings, the learner by a forward pass. Learnability = learner loss − reference loss (JEST's
per-example score, the diagonal of the pairwise learnability matrix summed over its row and column).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from .. import storage
from ..core.losses import per_example_loss
from ..data.shards import ReadStats, iter_shard, list_shards
from ..model.factory import load_model_dir
from ..progress import show_progress
from ..training.devices import autocast
from ..training.score_cache import ScoreCache

COLUMNS = ("uid", "shard_index", "caption", "noise", "reference_loss", "learner_loss", "learnability", "chosen")


def chosen_counts(model_dir: str) -> Counter:
    """How often the learner chose each uid (its uid log; empty for a run without one)."""
    from ..training.loop import read_uid_log

    try:
        return Counter(u for row in read_uid_log(model_dir) for u in row["uids"])
    except (ValueError, KeyError, FileNotFoundError):
        return Counter()


@torch.no_grad()
def curation_table(
    model_dir: str,
    scores_uri: str,
    pool_uri: str,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    max_shards: int | None = None,
) -> dict[str, np.ndarray]:
    """Column name -> array, one row per usable pool example, in pool order (`max_shards`: the first so
    many pool shards only, a sample the size of which does not grow with the pool)."""
    from tqdm import tqdm

    model, tokenizer = load_model_dir(model_dir, device)
    model.eval()
    cache = ScoreCache(scores_uri, pool_uri)
    chosen = chosen_counts(model_dir)
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    batch: list = []
    shard_of = {}

    def flush():
        if not batch:
            return
        uids = [s.uid for s in batch]
        ref = cache.lookup(uids, [s.shard for s in batch])
        ref_loss = per_example_loss(cache.index["loss"], ref.img, ref.txt, ref.log_t, ref.bias).float()
        images = torch.from_numpy(np.stack([s.image for s in batch])).to(device)
        with autocast(device):
            u, v = model(images, tokenizer.encode([s.caption for s in batch]).to(device))
        learner_loss = per_example_loss(model.config.loss, u.float(), v.float(), model.log_t, model.bias).cpu()
        cols["uid"] += uids
        cols["shard_index"] += [shard_of[x] for x in uids]
        cols["caption"] += [s.caption for s in batch]
        cols["noise"] += [str(s.meta.get("noise", "")) for s in batch]
        cols["reference_loss"] += ref_loss.tolist()
        cols["learner_loss"] += learner_loss.tolist()
        cols["learnability"] += (learner_loss - ref_loss).tolist()
        cols["chosen"] += [chosen.get(x, 0) for x in uids]
        batch.clear()

    shards = list_shards(pool_uri)[:max_shards]
    total = sum(cache.entries[storage.basename(s)]["n"] for s in shards)
    bar = tqdm(total=total, desc="export", unit="ex", disable=not show_progress(progress))
    for i, shard in enumerate(shards):
        for s in iter_shard(shard, ReadStats(max_bad_fraction=1.0), model.config.image_size):
            shard_of[s.uid] = i
            batch.append(s)
            if len(batch) == batch_size:
                flush()
                bar.update(batch_size)
    flush()
    bar.close()
    return {
        "uid": np.array(cols["uid"], dtype=object),
        "shard_index": np.array(cols["shard_index"], dtype=np.int32),
        "caption": np.array(cols["caption"], dtype=object),
        "noise": np.array(cols["noise"], dtype=object),
        "reference_loss": np.array(cols["reference_loss"], dtype=np.float32),
        "learner_loss": np.array(cols["learner_loss"], dtype=np.float32),
        "learnability": np.array(cols["learnability"], dtype=np.float32),
        "chosen": np.array(cols["chosen"], dtype=np.int64),
    }


def write_parquet(table: dict[str, np.ndarray], uri: str, metadata: dict | None = None) -> None:
    """The table as one Parquet file (written to a temporary name, then renamed)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({k: pa.array(list(v) if v.dtype == object else v) for k, v in table.items()})
    if metadata:
        t = t.replace_schema_metadata({"jestflow": json.dumps(metadata)})
    with storage.atomic_path(uri) as tmp:
        pq.write_table(t, tmp, compression="zstd")


def read_parquet(uri: str) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with storage.open_read(uri) as f:
        try:
            t = pq.read_table(f)
        except (pa.ArrowException, OSError) as e:  # truncated, not Parquet at all, a damaged page
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{uri}: not a readable Parquet file ({why})") from None
    return {name: t.column(name).to_numpy(zero_copy_only=False) for name in t.column_names}


def write_top_shards(table: dict, pool_uri: str, out_uri: str, fraction: float, shard_size: int = 1000) -> int:
    """The `fraction` of the pool with the highest learnability as new WebDataset shards; returns the count."""
    from ..data.shards import ShardWriter, iter_split

    if not 0 < fraction <= 1:
        raise ValueError(f"--top {fraction} must be in (0, 1]")
    order = np.argsort(-table["learnability"], kind="stable")
    keep = set(table["uid"][order[: max(1, int(round(fraction * len(order))))]].tolist())
    n = 0
    with ShardWriter(out_uri, prefix="top", shard_size=shard_size) as w:
        for s in iter_split(pool_uri, ReadStats(max_bad_fraction=1.0)):
            if s.uid in keep:
                w.write(s.uid, s.image, s.caption, s.meta)
                n += 1
    return n


def export(
    model_dir: str,
    scores_uri: str,
    pool_uri: str,
    out_uri: str,
    batch_size: int = 256,
    device: str = "cpu",
    top: float = 0.0,
    progress: bool = True,
) -> dict:
    """`jestflow export`: curation.parquet in `out_uri` (and top-learnability shards in out_uri/top)."""
    table = curation_table(model_dir, scores_uri, pool_uri, batch_size, device, progress)
    meta = {"model": model_dir, "scores": scores_uri, "pool": pool_uri, "rows": int(len(table["uid"]))}
    write_parquet(table, storage.join(out_uri, "curation.parquet"), meta)
    out = {**meta, "parquet": storage.join(out_uri, "curation.parquet")}
    if top:
        out["top_shards"] = storage.join(out_uri, "top")
        out["top_examples"] = write_top_shards(table, pool_uri, out["top_shards"], top)
    return out
