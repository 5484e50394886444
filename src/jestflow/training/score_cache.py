"""The reference scoring cache: the reference runs once over the pool; the learner only reads.

Layout of a cache::

    index.json          model facts (loss, log_t, bias, dim), one entry per pool shard (with its score
                        file), totals, a histogram of the pool's CLIP scores, the reference and what
                        it cost (`reference_flops`; 0 with `reference_pretrained` for a pretrained one)
    tokenizer.json      the reference's tokenizer, word-level or Hugging Face (the learner uses it too)
    <shard>.npz         uids, image and text embeddings (float16 or int8), per-example loss and CLIP
                        score, per pool shard; inside the cache folder, or anywhere the index names

Score files mirror pool shards one to one, so scoring resumes shard by shard and fans out over
shards, and a reader needs only the files of the shards it reads: a learner looks each super-batch up
by (pool shard, uid) and keeps the few score files its stream is reading in memory (`ScoreCache`), so
its memory does not grow with the pool and it never reads the files of shards it does not train on.
The index may name score files by absolute URI: the pipeline writes them next to, not inside, the
score artifact (KFP's launcher downloads an input artifact whole, launcher_v2.go downloadArtifacts),
and a merged cache names its parts' files instead of copying them. A cache is tied to its pool by
shard names, byte sizes and fingerprints: a learner given a cache that does not match its pool stops
with an error naming the first difference.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import OrderedDict

import numpy as np
import torch
from tqdm import tqdm

from .. import storage
from ..config import MAX_BAD_FRACTION
from ..core.losses import per_example_loss
from ..core.selection import Embeds
from ..data.shards import ReadStats, iter_shard, judge_bad, list_shards
from ..model.tokenizer import Tokenizer
from ..model.two_tower import TwoTower
from ..progress import show_progress
from .devices import autocast

log = logging.getLogger(__name__)

FORMAT = "jestflow-scores/1"
CLIP_BINS = 2000  # histogram of the reference's CLIP scores over [-1, 1]: the offline filter's threshold


def _shard_file(data_uri: str, shard: str) -> str:
    return storage.join(data_uri, storage.basename(shard).removesuffix(".tar") + ".npz")


def _resolve(cache_uri: str, file: str) -> str:
    """An index entry's score file: an absolute URI or path as written, else relative to the cache."""
    return file if "://" in file or file.startswith("/") else storage.join(cache_uri, file)


def clip_histogram(clip: np.ndarray) -> list[int]:
    return np.histogram(clip.astype(np.float64), bins=CLIP_BINS, range=(-1.0, 1.0))[0].tolist()


def _read_npz(uri: str) -> dict:
    import zipfile

    with storage.open_read(uri) as f:
        try:
            with np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{uri}: unreadable score shard ({type(e).__name__}: {e}); score the pool again") from None


def quantize(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: x ≈ q * scale, with scale = max |x_i| / 127, so each entry is off by at
    most scale / 2 (the selection error this causes is measured in tests/unit/test_cache_int8.py)."""
    x = x.float()
    scale = x.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    return torch.round(x / scale[:, None]).to(torch.int8).numpy(), scale.numpy().astype(np.float32)


def _embedding_arrays(name: str, x: torch.Tensor, dtype: str) -> dict:
    """The score file's arrays for one tower's embeddings: `name` (float16 or int8) and `name`_scale for int8."""
    if dtype == "int8":
        q, scale = quantize(x)
        return {name: q, f"{name}_scale": scale}
    return {name: x.half().numpy()}


@torch.no_grad()
def score_shard(
    model: TwoTower,
    tokenizer: Tokenizer,
    shard: str,
    out_uri: str,
    batch_size: int,
    device: str,
    stats: ReadStats,
    dtype: str = "float16",
    made_from: dict | None = None,
) -> dict:
    """Embed one pool shard with the reference and write its score file atomically. `made_from`: what
    the scores were made from (the reference's fingerprint), stored in the file with the shard's
    fingerprint, so a resumed run reuses it only for the same shard and reference. Where fingerprinting
    costs a read (local files), the shard's is hashed on this read, from the very bytes scored."""
    model.eval()
    crc = storage.Crc32c() if storage.fingerprint_reads(shard) else None
    skipped_before = dict(stats.skipped)
    uids, img, txt, loss = [], [], [], []
    buf = []

    def flush():
        if not buf:
            return
        images = torch.from_numpy(np.stack([s.image for s in buf])).to(device)
        tokens = tokenizer.encode([s.caption for s in buf]).to(device)
        with autocast(device):
            u, v = model(images, tokens)
        loss.append(per_example_loss(model.config.loss, u, v, model.log_t, model.bias).float().cpu())
        uids.extend(s.uid for s in buf)
        img.append(u.float().cpu()), txt.append(v.float().cpu())
        buf.clear()

    for s in iter_shard(shard, stats, model.config.image_size, crc=crc):
        buf.append(s)
        if len(buf) == batch_size:
            flush()
    flush()
    made_from = {**(made_from or {}), "shard_fingerprint": crc.fingerprint() if crc else storage.fingerprint(shard)}
    # this shard's bad samples, kept in its file: a resumed scoring reuses the file and still counts them
    skipped = {k: v - skipped_before.get(k, 0) for k, v in stats.skipped.items() if v > skipped_before.get(k, 0)}
    d = model.config.embed_dim
    img_all, txt_all = (torch.cat(x) if x else torch.zeros(0, d) for x in (img, txt))
    arrays = {
        "uids": np.array(uids, dtype=str),
        **_embedding_arrays("img", img_all, dtype),
        **_embedding_arrays("txt", txt_all, dtype),
        "loss": torch.cat(loss).numpy() if loss else np.zeros((0,), np.float32),
        # cosine of each sample's own image and caption: what CLIP-score filtering ranks by
        "clip": (img_all * txt_all).sum(1).numpy().astype(np.float32),
        **{k: np.array(v) for k, v in made_from.items()},
        "skipped": np.array(json.dumps(skipped, sort_keys=True)),
    }
    with storage.atomic_path(out_uri) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return {"n": len(uids), "uids": arrays["uids"], "clip": arrays["clip"], "skipped": arrays["skipped"], **made_from}


def _reusable(out: str, made_from: dict, dtype: str) -> dict | None:
    """The score file at `out` if a resumed run may keep it: complete (written atomically), of this
    precision, and made from this very shard by this very reference; else None (rescore)."""
    if not storage.exists(out):
        return None
    try:
        done = _read_npz(out)
    except ValueError as e:
        log.warning("%s; scoring the shard again", e)
        return None
    same = all(str(done.get(k, "")) == v for k, v in made_from.items())
    current = "clip" in done and "skipped" in done  # written by this version (older files are rescored)
    return done if same and current and ("img_scale" in done) == (dtype == "int8") else None


def score_pool(
    model: TwoTower,
    tokenizer: Tokenizer,
    pool_uri: str,
    cache_uri: str,
    batch_size: int = 256,
    device: str = "cpu",
    max_bad_fraction: float = 0.01,
    extra: dict | None = None,
    progress: bool = True,
    shards: list[str] | None = None,
    on_shard=None,
    dtype: str = "float16",
    reference_id: str = "",
    data_uri: str | None = None,
) -> dict:
    """Score every pool shard not yet scored (resumable), then write the index last. `dtype`: how the
    embeddings are stored (float16, or int8 with a per-row scale). `reference_id`: identifies the
    reference's weights; a score file is reused only if it was made from the same shard content and
    the same reference. `data_uri`: where the score files go (default: the cache folder); the index
    names them by absolute URI when they live elsewhere."""
    t0 = time.time()
    data_uri = data_uri or cache_uri
    whole_pool = shards is None
    shards = list_shards(pool_uri) if shards is None else shards
    stats = ReadStats(max_bad_fraction=max_bad_fraction)
    entries = []
    hist = np.zeros(CLIP_BINS, np.int64)
    seen: dict[str, str] = {}  # uid -> shard: duplicates across shards fail here, not at training
    for shard in tqdm(shards, desc="score", unit="shard", disable=not show_progress(progress)):
        out = _shard_file(data_uri, shard)
        done = None
        if storage.exists(out):  # scored before: reuse it only if made from these very bytes (one read)
            made_from = {"shard_fingerprint": storage.fingerprint(shard), "reference_id": reference_id}
            done = _reusable(out, made_from, dtype)
        if done is None:  # not scored yet, or from another shard, reference or precision: (re)score it
            done = score_shard(model, tokenizer, shard, out, batch_size, device, stats, dtype,
                               {"reference_id": reference_id})  # fmt: skip
        else:  # reused: its samples and bad samples count as if read now
            stats.samples += len(done["uids"])
            for k, v in json.loads(str(done["skipped"])).items():
                stats.skipped[k] = stats.skipped.get(k, 0) + v
        hist += np.array(clip_histogram(done["clip"]), np.int64)
        for uid in done["uids"].tolist():
            if uid in seen:
                first, again = storage.basename(seen[uid]), storage.basename(shard)
                raise ValueError(
                    f"duplicate uid {uid!r} in pool shards {first} and {again}: "
                    "uids must be unique across the pool (the score cache is looked up by uid)"
                )
            seen[uid] = shard
        n = len(done["uids"])
        entries.append(
            {
                "shard": storage.basename(shard),
                "bytes": storage.size(shard),
                "n": n,
                "fingerprint": str(done["shard_fingerprint"]),
                "file": storage.basename(out) if data_uri == cache_uri else out,
            }
        )
        if on_shard is not None:
            on_shard(n, stats.bad)
    if whole_pool:  # a fan-out part is judged with the others, when they are merged
        stats.judge(f"pool {pool_uri}")
    total = sum(e["n"] for e in entries)
    index = {
        "format": FORMAT,
        "pool": pool_uri,
        "loss": model.config.loss,
        "embed_dim": model.config.embed_dim,
        "embed_dtype": dtype,
        "log_t": float(model.log_t.detach()),
        "bias": float(model.bias.detach()),
        "shards": entries,
        "n": total,
        "skipped": stats.skipped,
        "max_bad_fraction": max_bad_fraction,
        "clip_hist": hist.tolist(),
        "scoring_flops": model.flops_per_example() * total,
        "seconds": time.time() - t0,
        **(extra or {}),
    }
    tokenizer.save(storage.join(cache_uri, "tokenizer.json"))
    storage.write_json(storage.join(cache_uri, "index.json"), index)
    return index


def part_shards(shards: list[str], part: int, parts: int) -> list[str]:
    """Part `part` of `parts` of the pool's shards (round robin over the sorted list): the unit of
    the pipeline's scoring fan-out."""
    if not 0 <= part < parts:
        raise ValueError(f"score part {part} is not in 0..{parts - 1}")
    return shards[part::parts]  # empty when the pool has fewer shards than parts: an empty partial cache


def merge_caches(part_uris: list[str], pool_uri: str, out_uri: str) -> dict:
    """Merge the partial caches written by a scoring fan-out into one cache for `pool_uri`.

    Parts must come from the same reference, cover every pool shard exactly once, and agree on the
    model facts; anything else is an error naming the part. Nothing is copied: the merged index names
    each part's score files where they are (absolute), and is written last (a cache without index.json
    is not a cache). Parts must therefore stay where they are while the merged cache is in use."""
    indexes = []
    for uri in part_uris:
        index_uri = storage.join(uri, "index.json")
        if not storage.exists(index_uri):
            raise ValueError(f"{uri}: score part has no index.json (did that part finish?)")
        indexes.append((uri, storage.read_json(index_uri)))
    if not indexes:
        raise ValueError("no score parts to merge")
    first_uri, first = indexes[0]
    facts = ("format", "loss", "embed_dim", "embed_dtype", "log_t", "bias", "reference", "max_bad_fraction")
    owner: dict[str, str] = {}
    entries: dict[str, dict] = {}
    for uri, idx in indexes:
        for k in facts:
            if idx.get(k) != first.get(k):
                raise ValueError(
                    f"score parts disagree on {k}: {first_uri} has {first.get(k)!r}, {uri} has {idx.get(k)!r}"
                )
        for e in idx["shards"]:
            if e["shard"] in owner:
                raise ValueError(f"shard {e['shard']} scored twice: in {owner[e['shard']]} and {uri}")
            owner[e["shard"]], entries[e["shard"]] = uri, e
    pool = [storage.basename(s) for s in list_shards(pool_uri)]
    missing = [s for s in pool if s not in entries]
    if missing or len(entries) != len(pool):
        raise ValueError(
            f"score parts do not cover pool {pool_uri}: not scored {missing[:3]}, "
            f"not in pool {sorted(set(entries) - set(pool))[:3]}"
        )
    for name in pool:
        entries[name] = {**entries[name], "file": _resolve(owner[name], entries[name]["file"])}
    skipped: dict[str, int] = {}
    for _, idx in indexes:
        for k, v in idx.get("skipped", {}).items():
            skipped[k] = skipped.get(k, 0) + v
    n = sum(entries[s]["n"] for s in pool)
    judge_bad(n, skipped, first.get("max_bad_fraction", MAX_BAD_FRACTION), f"pool {pool_uri}")  # the parts together
    with storage.open_read(storage.join(first_uri, "tokenizer.json")) as f:
        storage.write_bytes(storage.join(out_uri, "tokenizer.json"), f.read())
    index = {
        **first,
        "pool": pool_uri,
        "shards": [entries[s] for s in pool],
        "n": n,
        "skipped": skipped,
        "clip_hist": np.sum([idx.get("clip_hist", [0] * CLIP_BINS) for _, idx in indexes], axis=0).tolist(),
        "scoring_flops": sum(idx.get("scoring_flops", 0.0) for _, idx in indexes),
        "seconds": max(idx.get("seconds", 0.0) for _, idx in indexes),
        "parts": len(indexes),
    }
    storage.write_json(storage.join(out_uri, "index.json"), index)
    return index


class ShardScores:
    """One score file in memory: its rows by uid, embeddings as stored, CLIP scores."""

    def __init__(self, z: dict, uri: str, n: int):
        if len(z["uids"]) != n:
            raise ValueError(f"{uri}: holds {len(z['uids'])} samples, index says {n}")
        self.row = {u: i for i, u in enumerate(z["uids"].tolist())}
        self.img, self.txt = torch.from_numpy(z["img"]), torch.from_numpy(z["txt"])
        self.img_scale = torch.from_numpy(z["img_scale"]) if "img_scale" in z else None
        self.txt_scale = torch.from_numpy(z["txt_scale"]) if "txt_scale" in z else None
        self.uri = uri
        self.clip = z.get("clip")
        self.nbytes = sum(v.nbytes for v in z.values() if isinstance(v, np.ndarray))

    def embeddings(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def get(x, scale):
            return x[rows].float() if scale is None else x[rows].float() * scale[rows][:, None]

        return get(self.img, self.img_scale), get(self.txt, self.txt_scale)


class ScoreCache:
    """The reference's cached embeddings, looked up by (pool shard, uid), read shard by shard.

    Only the index is read up front. A score file is read when a sample of its pool shard is first
    looked up and kept among the `keep` most recently used (the stream reads a few shards at a time), so
    memory stays bounded however large the pool, and files of shards never read are never fetched.
    `bytes_read` counts what was fetched (the scale rehearsal reports it)."""

    def __init__(self, uri: str, pool_uri: str | None = None, keep: int = 16):
        self.uri, self.keep = uri, keep
        index_uri = storage.join(uri, "index.json")
        if not storage.exists(index_uri):
            raise ValueError(f"{uri}: not a score cache (no index.json; was `jestflow score` run?)")
        self.index = storage.read_json(index_uri)
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{index_uri}: unknown score cache format {self.index.get('format')!r}")
        self.entries = {e["shard"]: e for e in self.index["shards"]}
        if pool_uri is not None:
            self.check_matches(pool_uri)
        self.log_t = torch.tensor(self.index["log_t"])
        self.bias = torch.tensor(self.index["bias"])
        self._loaded: OrderedDict[str, ShardScores] = OrderedDict()
        self._lock = threading.Lock()  # the prefetch thread filters while the loop looks up
        self.bytes_read, self.files_read = 0, 0

    def check_matches(self, pool_uri: str) -> None:
        have = self.entries
        pool = {storage.basename(s): s for s in list_shards(pool_uri)}
        if set(have) != set(pool):
            missing = sorted(set(pool) - set(have))[:3]
            extra = sorted(set(have) - set(pool))[:3]
            raise ValueError(
                f"score cache {self.uri} does not match pool {pool_uri}: "
                f"pool shards not scored {missing}, scored shards not in pool {extra}"
            )
        for name, shard in pool.items():
            want = have[name].get("fingerprint") or ""
            if want.startswith("sha256-ends:"):  # jestflow before 2026-12: hashed a shard's ends only
                raise ValueError(
                    f"score cache {self.uri} was made by an older jestflow, whose shard fingerprints did not "
                    "cover every byte; score the pool again"
                )
            if storage.size(shard) != have[name]["bytes"] or (want and storage.fingerprint(shard) != want):
                raise ValueError(
                    f"score cache {self.uri} does not match pool {pool_uri}: shard {name} "
                    "changed since it was scored; score the pool again"
                )

    def shard(self, name: str) -> ShardScores:
        """The score file of pool shard `name`, read on first use and kept while recently used."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            entry = self.entries.get(name)
            if entry is None:
                raise ValueError(
                    f"pool shard {name} is not in score cache {self.uri}: the cache does not match the pool"
                )
            uri = _resolve(self.uri, entry["file"])
            scores = ShardScores(_read_npz(uri), uri, entry["n"])
            self.bytes_read += scores.nbytes
            self.files_read += 1
            self._loaded[name] = scores
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return scores

    def lookup(self, uids: list[str], shards: list[str], device="cpu") -> Embeds:
        """The reference's embeddings of `uids` (each from the pool shard beside it), in that order."""
        by_shard: dict[str, list[int]] = {}
        for pos, name in enumerate(shards):
            by_shard.setdefault(name, []).append(pos)
        order, img, txt = [], [], []
        for name, positions in by_shard.items():
            sc = self.shard(name)
            try:
                rows = torch.tensor([sc.row[uids[p]] for p in positions])
            except KeyError as e:
                raise ValueError(
                    f"uid {e.args[0]!r} is not in score cache {self.uri} (shard {name}): the cache does not "
                    "match the pool"
                ) from None
            i, t = sc.embeddings(rows)
            img.append(i), txt.append(t)
            order += positions
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order)] = torch.arange(len(order))  # from shard-grouped rows back to the given order
        return Embeds(torch.cat(img)[back].to(device), torch.cat(txt)[back].to(device), self.log_t.to(device),
                      self.bias.to(device))  # fmt: skip

    def clip_score(self, uid: str, shard: str) -> float:
        """The reference's CLIP score (cosine of the sample's own image and caption embeddings)."""
        sc = self.shard(shard)
        if sc.clip is None:  # every score file this version writes has them (and `score` rescores older ones)
            raise ValueError(f"{sc.uri}: score file without CLIP scores (made by an older jestflow); score again")
        return float(sc.clip[sc.row[uid]])

    def clip_threshold(self, keep: float) -> float:
        """The CLIP score above which `keep` of the pool lies, from the index's histogram (to within a bin,
        2/CLIP_BINS; slightly more is kept at a tie), so no score file is read to find it."""
        hist = np.asarray(self.index.get("clip_hist") or [], np.int64)
        if not len(hist):
            raise ValueError(f"{self.uri}: score cache without CLIP scores (made by an older jestflow); score again")
        want = max(1, int(round(keep * hist.sum())))
        above = np.cumsum(hist[::-1])  # samples in the top k bins
        k = int(np.searchsorted(above, want)) + 1
        return float(-1.0 + 2.0 * (CLIP_BINS - k) / CLIP_BINS)

    def __len__(self) -> int:
        return int(self.index["n"])
