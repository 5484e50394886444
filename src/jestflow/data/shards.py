"""WebDataset-style tar shards: writing, streaming, deterministic shuffling.

A split is a folder of ``*.tar`` shards. A sample is the group of consecutive tar members that share
one key (the sample's uid): ``<uid>.png`` or ``<uid>.jpg``, ``<uid>.txt`` (UTF-8 caption) and an
optional ``<uid>.json`` (metadata). See docs/data-format.md.

The reader streams: it holds one shard's current sample plus a bounded shuffle buffer, never a split.
Per-sample problems (undecodable image, missing or empty caption, ...) are skipped and counted in a
`ReadStats` and judged by one rule everywhere (`judge_bad`): past `max_bad_fraction`, or with no usable
sample, the read fails loudly. Structural problems (corrupt tar, unsafe
member names, duplicate uids within a shard) raise `ValueError` naming the file and uid.

Shards are read by `tar_members`, not `tarfile`'s stream reader: that one takes a damaged header
after the first member for the end of the archive and silently drops the rest of the shard. Here a
shard is read to its real end: every header's checksum is checked, every member must be complete,
the archive must end with its end-of-archive marker and nothing but zero padding may follow, or the
read fails naming the shard and the byte offset.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .. import storage
from ..config import MAX_BAD_FRACTION

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
MAX_CAPTION_CHARS = 2000
MAX_PIXELS_ENV = "JESTFLOW_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 36_000_000  # 6000 x 6000: far above any training resolution, ~108 MB decoded
# jestflow checks the size itself, before decoding, against max_image_pixels(); PIL's own check would
# warn at 89 MP and call bigger images "undecodable".
Image.MAX_IMAGE_PIXELS = None


def max_image_pixels() -> int:
    """Images with more pixels are skipped as "image-too-large" without being decoded ($JESTFLOW_MAX_IMAGE_PIXELS)."""
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"${MAX_PIXELS_ENV}={raw!r} must be a positive number of pixels")
    return int(raw)


@dataclass
class Sample:
    uid: str
    image: np.ndarray  # H x W x 3, uint8
    caption: str
    meta: dict
    shard: str = ""  # the name of the tar shard it came from (what the score cache is read by)


# The one bad-sample rule (see `judge_bad`): a split fails when more than `max_bad_fraction` of its samples
# are bad, or none is usable. What reads a whole split (`data check`, `score` and its merge, `evaluate`,
# the reference's tokenizer pass) judges the whole split once read. Training streams, and a pool may be
# too big to read in one run: it judges the stream so far at the end of every pass over the split and,
# once the stream holds this many samples, whenever a sample is skipped (a split smaller than that is
# judged exactly as `data check` judges it).
JUDGE_STREAM_AFTER = 10_000
# A training stream remembers this many uids of its first pass (~100 MB) to catch one repeated across
# shards; beyond them only `score` (every pool uid, for the score cache) and `data check` look.
DUPLICATE_CHECK_UIDS = 1_000_000


def judge_bad(samples: int, skipped: dict, max_bad_fraction: float, what: str, last: str = "") -> None:
    """Raise the one-line `ValueError` of the bad-sample rule for `what` (a split, pool or stream), or
    return: `samples` usable, `skipped` bad ones by reason."""
    bad = sum(skipped.values())
    seen = samples + bad
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
    if samples == 0:
        raise ValueError(f"{what}: no usable samples" + (f" (all {seen} bad: {reasons})" if seen else ""))
    if bad / seen > max_bad_fraction:
        raise ValueError(
            f"{what}: {bad} of {seen} samples are bad ({reasons}), more than max_bad_fraction="
            f"{max_bad_fraction}" + (f"; last: {last}" if last else "")
        )


@dataclass
class ReadStats:
    """Counts what a read saw; `skipped` maps a reason to how many samples it dropped. `running`: judge
    the stream so far while reading (training; see `JUDGE_STREAM_AFTER`); otherwise the reader calls
    `judge` once the whole split is read."""

    samples: int = 0
    skipped: dict = field(default_factory=dict)
    max_bad_fraction: float = MAX_BAD_FRACTION
    # uids whose image failed to decode: the one bad-sample reason that needs a full decode to find,
    # so a resumed stream can replay the samples it skips without decoding them (see `stream`)
    undecodable: list = field(default_factory=list)  # appended to (thread-safe); may repeat
    running: bool = False
    last_bad: str = ""  # shard:uid of the last sample skipped

    @property
    def bad(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.last_bad = where
        if reason == "undecodable-image":
            self.undecodable.append(where.rsplit(":", 1)[-1])
        if self.running and self.samples + self.bad >= JUDGE_STREAM_AFTER:
            self.judge("the training stream so far")

    def judge(self, what: str) -> None:
        judge_bad(self.samples, self.skipped, self.max_bad_fraction, what, self.last_bad)


def list_shards(uri: str) -> list[str]:
    shards = storage.list_files(uri, ".tar")
    if not shards:
        raise ValueError(f"no .tar shards in {uri}")
    return shards


def _split_key(name: str, shard: str) -> tuple[str, str]:
    if name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"{shard}: refusing unsafe tar member name {name!r}")
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return base, ""
    uid, ext = base.split(".", 1)
    return uid, "." + ext.lower()


class LazySample(Sample):
    """A sample whose checks all passed but whose pixels are decoded only if someone looks at them: what
    a resumed stream yields while it replays the samples earlier attempts already trained on."""

    def __init__(self, uid: str, data: bytes, image_size: int | None, caption: str, meta: dict, shard: str = ""):
        self.uid, self.caption, self.meta, self.shard = uid, caption, meta, shard
        self._data, self._size, self._image = data, image_size, None

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            self._image = _pixels(self._data, self._size)
        return self._image


def _pixels(data: bytes, image_size: int | None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if image_size and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()


def _decode(
    uid: str, parts: dict, shard: str, image_size: int | None, undecodable: set | None = None
) -> tuple[Sample | None, str]:
    """Turn one group of members into a Sample, or (None, reason) when the sample is bad.

    `undecodable` (replaying): the uids known to fail decoding; every other check is made as always,
    but the pixels are left for `LazySample` to decode if they are ever needed."""
    img_key = next((e for e in IMAGE_EXTS if e in parts), None)
    if img_key is None:
        return None, "missing-image"
    if ".txt" not in parts:
        return None, "missing-caption"
    try:
        caption = parts[".txt"].decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "caption-not-utf8"
    if not caption:
        return None, "empty-caption"
    if len(caption) > MAX_CAPTION_CHARS:
        return None, "caption-too-long"
    limit = max_image_pixels()  # read before the try: a bad setting is an error, not an undecodable image
    try:
        with Image.open(io.BytesIO(parts[img_key])) as im:  # reads the header only
            if im.size[0] * im.size[1] > limit:
                return None, "image-too-large"
        if undecodable is None:
            image = _pixels(parts[img_key], image_size)
        elif uid in undecodable:
            return None, "undecodable-image"
    except Exception:  # PIL raises many types for broken files
        return None, "undecodable-image"
    meta = {}
    if ".json" in parts:
        try:
            meta = json.loads(parts[".json"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, "bad-json"
        if not isinstance(meta, dict):
            return None, "bad-json"
    if undecodable is not None:
        return LazySample(uid, parts[img_key], image_size, caption, meta, storage.basename(shard)), ""
    return Sample(uid, image, caption, meta, storage.basename(shard)), ""


def _decode_window(items: list[tuple[str, dict]], shard: str, image_size: int | None) -> list:
    return [_decode(uid, parts, shard, image_size) for uid, parts in items]


class DecodePool:
    """Decodes windows of samples on `workers` processes (default) or threads, `depth` windows in flight.

    Processes keep JPEG decoding and resizing off the training process's interpreter lock (decode threads
    hold it for part of each image, which slowed the training thread's kernel launches on a GPU).
    Workers are spawned, not forked: forking a process that holds a CUDA context is unsafe."""

    WINDOW = 16  # samples per task: small enough to spread a super-batch over the workers

    def __init__(self, workers: int, mode: str = "process"):
        from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

        if mode == "process":
            import multiprocessing

            self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        elif mode == "thread":
            self.executor = ThreadPoolExecutor(workers, thread_name_prefix="jestflow-decode")
        else:
            raise ValueError(f"decode mode {mode!r} must be process or thread")
        self.mode, self.depth = mode, 2 * workers

    def submit(self, items: list[tuple[str, dict]], shard: str, image_size: int | None):
        try:
            return self.executor.submit(_decode_window, items, shard, image_size)
        except RuntimeError as e:
            if "bootstrapping phase" not in str(e):
                raise
            raise RuntimeError(
                "decode_mode=process spawns worker processes, which re-import the calling "
                'script: guard its entry point with `if __name__ == "__main__":`, or set '
                "learner.decode_mode=thread"
            ) from None

    def result(self, fut, shard: str) -> list:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return fut.result()
        except BrokenProcessPool as e:
            raise RuntimeError(
                f"{shard}: a decode worker process died ({e}). Its own error is printed above; "
                'out of memory, or a script without an `if __name__ == "__main__":` guard, are '
                "the usual causes (learner.decode_mode=thread avoids processes)"
            ) from None

    def shutdown(self) -> None:
        self.executor.shutdown(wait=self.mode == "process", cancel_futures=True)


def iter_shard(
    shard: str,
    stats: ReadStats | None = None,
    image_size: int | None = None,
    pool: DecodePool | None = None,
    replay=None,
    crc: storage.Crc32c | None = None,
) -> Iterator[Sample]:
    """Yield the samples of one shard in file order. `crc`: hash every byte of the shard file into it
    (read to its end, past the tar's end-of-archive blocks), for a fingerprint of what was read.

    `pool` decodes images on its workers, windows of samples at a time, several windows ahead of the
    reader; the order, the checks and the counts are exactly those of the serial path. `replay`: a
    function giving, before each sample, the set of uids known to be undecodable while the caller is
    replaying (the sample is then checked without decoding, see `LazySample`), or None once it is not."""
    stats = stats if stats is not None else ReadStats()
    seen: set[str] = set()
    pending: list = []
    inflight: deque = deque()

    def count(uid, result):
        sample, reason = result
        if sample is None:
            stats.skip(reason, f"{shard}:{uid}")
        else:
            stats.samples += 1
        return sample

    def flush(uid, parts):
        if uid in seen:
            raise ValueError(f"{shard}: duplicate uid {uid!r}")
        seen.add(uid)
        known_bad = replay() if replay is not None else None
        if pool is None or known_bad is not None:
            return count(uid, _decode(uid, parts, shard, image_size, known_bad))
        pending.append((uid, parts))
        if len(pending) >= DecodePool.WINDOW:
            inflight.append((pending[:], pool.submit(pending[:], shard, image_size)))
            pending.clear()
        return None

    def drain(force: bool):
        """Samples of the oldest windows, in order, once more than `depth` are in flight (all when forced)."""
        if force and pending:
            inflight.append((pending[:], pool.submit(pending[:], shard, image_size)))
            pending.clear()
        out = []
        while inflight and (force or len(inflight) > pool.depth):
            items, fut = inflight.popleft()
            out += [count(uid, r) for (uid, _), r in zip(items, pool.result(fut, shard))]
        return [s for s in out if s is not None]

    with storage.open_read(shard, crc) as raw:
        uid, parts = None, {}
        for name, data in tar_members(raw, shard):
            key, ext = _split_key(name, shard)
            if key != uid and uid is not None:
                s = flush(uid, parts)
                if s is not None:
                    yield s
                if pool is not None:
                    yield from drain(force=False)
                parts = {}
            uid = key
            parts[ext] = data
        if uid is not None:
            s = flush(uid, parts)
            if s is not None:
                yield s
        if pool is not None:
            yield from drain(force=True)
        while crc is not None and raw.read(1 << 20):  # the rest of the file, for the fingerprint
            pass


BLOCK = tarfile.BLOCKSIZE
REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class _Reader:
    """Exact reads from a stream, counting the offset (for error messages)."""

    def __init__(self, raw, shard: str):
        self.raw, self.shard, self.offset = raw, shard, 0

    def read(self, n: int) -> bytes:
        chunks, want = [], n
        while want:
            try:
                chunk = self.raw.read(min(want, 1 << 20))
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a gzip-compressed shard, damaged
                at = self.offset + sum(map(len, chunks))
                raise ValueError(
                    f"{self.shard}: damaged gzip stream after {at} bytes of tar ({e}); the shard cannot be read"
                ) from None
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        data = b"".join(chunks)
        self.offset += len(data)
        return data


def tar_members(raw, shard: str) -> Iterator[tuple[str, bytes]]:
    """(name, data) of every regular file of the tar stream `raw`, in order; other member types are
    skipped (their names still checked). Handles ustar, GNU long names and pax headers, and gzip.

    Raises `ValueError` naming `shard` and the byte offset for: a header whose checksum or fields are
    wrong, a member shorter than its header says, a stream that ends without the end-of-archive
    marker, and anything but zero bytes after that marker."""
    head = raw.read(2)
    if head[:2] == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=_Prefixed(head, raw))
        head = b""
    r = _Reader(_Prefixed(head, raw), shard)
    long_name, pax = None, {}
    while True:
        at = r.offset
        block = r.read(BLOCK)
        if not block and at == 0:
            raise ValueError(f"{shard}: not a readable tar file (empty)")
        if len(block) < BLOCK:
            where = f"inside the header at byte {at}" if block else "without the end-of-archive marker"
            raise ValueError(
                f"{shard}: truncated tar: the stream ends at byte {r.offset} {where}; the rest of the shard is missing"
            )
        if block.count(0) == BLOCK:  # end-of-archive marker: only zero padding may follow
            _check_padding(r, shard)
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            what = "not a readable tar file" if at == 0 else "corrupt tar header"
            raise ValueError(f"{shard}: {what} at byte {at} ({e})") from None
        size = int(pax.get("size", info.size))
        data = r.read(size)
        if len(data) < size:
            raise ValueError(
                f"{shard}: truncated tar: member {info.name!r} at byte {at} declares {size} bytes, "
                f"only {len(data)} are there"
            )
        r.read(-size % BLOCK)  # padding to the next header (its absence shows as a short header next)
        if info.type == tarfile.GNUTYPE_LONGNAME:
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if info.type == tarfile.XHDTYPE:
            pax = _pax_records(data, shard, at)
            continue
        if info.type in (tarfile.XGLTYPE, tarfile.GNUTYPE_LONGLINK):
            continue
        name = pax.get("path") or long_name or info.name
        long_name, pax = None, {}
        if info.type in REGULAR:
            yield name, data
        else:
            _split_key(name, shard)  # not a file: skipped, but an unsafe name is still refused


def _check_padding(r: _Reader, shard: str) -> None:
    while True:
        at = r.offset
        chunk = r.read(1 << 16)
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            first = at + next(i for i, b in enumerate(chunk) if b)
            raise ValueError(
                f"{shard}: corrupt tar: data at byte {first} after the end-of-archive marker (a damaged "
                "header or an appended archive); samples there would be lost"
            )


def _pax_records(data: bytes, shard: str, at: int) -> dict:
    """A pax extended header's `length key=value\n` records."""
    out, i = {}, 0
    try:
        while i < len(data) and data[i : i + 1] != b"\0":
            space = data.index(b" ", i)
            length = int(data[i:space])
            key, _, value = data[space + 1 : i + length - 1].partition(b"=")
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
            if length <= 0:
                raise ValueError
            i += length
    except ValueError:
        raise ValueError(f"{shard}: corrupt tar: bad pax header at byte {at}") from None
    return out


class _Prefixed:
    """A stream with `head` put back in front of it."""

    def __init__(self, head: bytes, raw):
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if n < 0:
            out, self.head = self.head + self.raw.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out + self.raw.read(n - len(out)) if len(out) < n else out


def iter_split(uri: str, stats: ReadStats | None = None, image_size: int | None = None) -> Iterator[Sample]:
    """Every sample of a split, shards in name order, no shuffling (scoring, evaluation)."""
    for shard in list_shards(uri):
        yield from iter_shard(shard, stats, image_size)


def stream(
    uri: str,
    seed: int,
    shuffle_buffer: int = 1000,
    stats: ReadStats | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    decode_workers: int = 1,
    decode_mode: str = "process",
    replaying=None,
    undecodable: set | None = None,
) -> Iterator[Sample]:
    """Shuffled, endless (or `epochs`-long) stream: shard order and a bounded buffer, both from `seed`.
    `decode_workers` > 1 decodes images on that many processes or threads (`decode_mode`; same samples,
    same order).

    Resuming: while `replaying()` is true the caller is skipping samples earlier attempts already
    trained on. Those are replayed, not decoded: every check but the pixel decode runs as before, and
    `undecodable` (the uids earlier attempts found undecodable, `ReadStats.undecodable`) stands in for
    the decode, so the stream takes exactly the course of an uninterrupted one while the samples
    skipped are never decoded (those still in the shuffle buffer when the replay ends are decoded when
    they come out)."""
    shards = list_shards(uri)
    stats = stats if stats is not None else ReadStats()
    # first pass: uid -> shard, to stop on a uid repeated across shards (iter_shard stops on one within a
    # shard), up to DUPLICATE_CHECK_UIDS uids; `score` and `data check` check a whole pool
    owner: dict[str, str] | None = {}
    pool = DecodePool(decode_workers, decode_mode) if decode_workers > 1 else None
    known_bad = set(undecodable or ())

    def replay():
        return known_bad if replaying() else None

    try:
        epoch = 0
        while epochs is None or epoch < epochs:
            rng = random.Random(f"{seed}:{epoch}")
            order = shards[:]
            rng.shuffle(order)
            buf: list[Sample] = []
            for shard in order:
                lazy = replaying is not None and replaying()  # a shard begun while replaying checks per sample
                for s in iter_shard(shard, stats, image_size, pool, replay=replay if lazy else None):
                    if epoch == 0 and owner is not None:
                        first = owner.setdefault(s.uid, shard)
                        if first != shard:
                            raise ValueError(
                                f"duplicate uid {s.uid!r} in shards {storage.basename(first)} and "
                                f"{storage.basename(shard)} of {uri}: uids must be unique across a split"
                            )
                        if len(owner) >= DUPLICATE_CHECK_UIDS:
                            owner = None  # memory stays bounded on a pool of billions
                    if shuffle_buffer <= 0:  # no buffer: the shards' own order (shard order still shuffled)
                        yield s
                        continue
                    if len(buf) < shuffle_buffer:
                        buf.append(s)
                        continue
                    i = rng.randrange(len(buf))
                    buf[i], s = s, buf[i]
                    yield s
            rng.shuffle(buf)
            yield from buf
            stats.judge(f"split {uri} (pass {epoch + 1})")  # the stream so far: every pass up to this one
            epoch += 1
    finally:  # the stream was exhausted, closed or garbage-collected: let the decode workers go
        if pool is not None:
            pool.shutdown()


class ShardWriter:
    """Write samples into ``<prefix>-NNNNN.tar`` shards of `shard_size` samples, each atomically."""

    def __init__(self, folder: str, prefix: str = "shard", shard_size: int = 1000):
        self.folder, self.prefix, self.shard_size = folder, prefix, shard_size
        self.index = 0
        self._buf: list[tuple[str, bytes, str, dict | None]] = []
        self.written: list[str] = []

    def write(self, uid: str, image: np.ndarray | bytes, caption: str, meta: dict | None = None) -> None:
        if isinstance(image, np.ndarray):
            out = io.BytesIO()
            Image.fromarray(image).save(out, format="PNG", compress_level=1)
            image = out.getvalue()
        self._buf.append((uid, image, caption, meta))
        if len(self._buf) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        uri = storage.join(self.folder, f"{self.prefix}-{self.index:05d}.tar")
        with storage.atomic_path(uri) as tmp, tarfile.open(tmp, "w") as tar:
            for uid, png, caption, meta in self._buf:
                members = [(f"{uid}.png", png), (f"{uid}.txt", caption.encode())]
                if meta is not None:
                    members.append((f"{uid}.json", json.dumps(meta, sort_keys=True).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        self.written.append(uri)
        self.index += 1
        self._buf = []

    def close(self) -> list[str]:
        self._flush()
        return self.written

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
