"""The training loop's data: super-batches of decoded samples and tokens, prepared ahead of the loop.

`make_batches` groups a sample stream into `Batch`es; `Prefetcher` builds the next ones on a
background thread (optionally in page-locked memory) and records how long the loop waited.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.shards import Sample
from ..model.tokenizer import Tokenizer


@dataclass
class Batch:
    uids: list
    images: torch.Tensor  # B x H x W x 3 uint8
    tokens: torch.Tensor  # B x context
    noise: list  # the pool's recorded noise type per sample ("" when unknown)
    groups: list = field(default_factory=list)  # the pool's recorded group per sample (e.g. head / tail), if any
    shards: list = field(default_factory=list)  # the pool shard each sample came from (the score cache's key)

    def take(self, idx: torch.Tensor) -> Batch:
        i = idx.cpu()
        il = i.tolist()
        if self.images.is_pinned():  # keep the chosen sub-batch page-locked: its copy to the GPU stays async
            images = torch.index_select(
                self.images,
                0,
                i,
                out=torch.empty((len(il), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True),
            )
        else:
            images = self.images[i]
        return Batch(
            [self.uids[k] for k in il],
            images,
            self.tokens[i],
            [self.noise[k] for k in il],
            [self.groups[k] for k in il] if self.groups else [],
            [self.shards[k] for k in il] if self.shards else [],
        )

    def __len__(self) -> int:
        return len(self.uids)


def make_batches(samples: Iterator[Sample], size: int, tokenizer: Tokenizer) -> Iterator[Batch]:
    while True:
        chunk = [s for _, s in zip(range(size), samples)]
        if len(chunk) < size:
            return
        yield Batch(
            [s.uid for s in chunk],
            torch.from_numpy(np.stack([s.image for s in chunk])),
            tokenizer.encode([s.caption for s in chunk]),
            [str(s.meta.get("noise", "")) for s in chunk],
            [str(s.meta["group"]) for s in chunk] if all("group" in s.meta for s in chunk) else [],
            [s.shard for s in chunk],
        )


class Prefetcher:
    """Decode the next batches on a background thread; `wait_seconds` is the time the loop waited.
    With `pin`, batches are put in page-locked memory there, so host-to-GPU copies run asynchronously."""

    def __init__(self, it: Iterator[Batch], depth: int = 2, pin: bool = False):
        self.pin = pin
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.wait_seconds = 0.0
        self._stop = False
        self.t = threading.Thread(target=self._run, args=(it,), daemon=True)
        self.t.start()

    def _put(self, item) -> bool:
        """Hand `item` over unless the loop has closed the prefetcher; False once closed."""
        while not self._stop:
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it):
        try:
            for b in it:
                if self._stop:
                    return
                if self.pin:
                    b = Batch(b.uids, b.images.pin_memory(), b.tokens.pin_memory(), b.noise, b.groups, b.shards)
                if not self._put(b):
                    return
            self._put(StopIteration())
        except BaseException as e:  # surface reader errors in the training thread
            self._put(e)

    def __next__(self) -> Batch:
        t0 = time.perf_counter()
        item = self.q.get()
        self.wait_seconds = time.perf_counter() - t0
        if isinstance(item, StopIteration):
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        """Stop and join the thread, so no decoding runs on while the interpreter shuts down (a daemon
        thread inside torch at exit aborts the process: "terminate called without an active exception")."""
        self._stop = True
        self.t.join(timeout=60)
