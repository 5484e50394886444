"""Helpers for tests that build or take apart tar shards by hand."""

import io
import tarfile


def write_tar(path, items) -> None:
    """Write (member name, bytes) pairs as a tar file."""
    with tarfile.open(path, "w") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def members(path) -> list:
    with tarfile.open(path) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def tiny_split(folder, shards: int = 4, per_shard: int = 40, side: int = 32, words: int = 7):
    """A split of random images captioned "a photo N" (N < `words`): training-loop tests in seconds."""
    import numpy as np

    from jestflow.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    for s in range(shards):
        with ShardWriter(str(folder), f"p{s}", per_shard) as w:
            for i in range(per_shard):
                w.write(f"p{s}-{i:03d}", rng.integers(0, 255, (side, side, 3), dtype=np.uint8), f"a photo {i % words}")
    return folder


def tiny_tokenizer(folder, context_length: int = 16, words: int = 7):
    """tokenizer.json for tiny_split's captions, in `folder` (what --tokenizer-from reads)."""
    from jestflow.model.tokenizer import Tokenizer

    Tokenizer.build([f"a photo {i}" for i in range(words)], context_length).save(str(folder / "tokenizer.json"))
    return folder
