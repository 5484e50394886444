"""What the embedded demo datasets (demo.py's Fashion-MNIST scenes, glyphs.py's font glyphs) share:
the captions web junk is made of, and writing a generated split as shards."""

from __future__ import annotations

from tqdm import tqdm

from .shards import ShardWriter

JUNK_CAPTIONS = (
    "IMG_0412.jpg",
    "click to enlarge",
    "DSC_1234.JPG",
    "untitled",
    "free shipping on all orders",
    "image",
    "thumbnail",
    "photo 3 of 12",
    "sale sale sale",
    "screenshot 2019-05-02",
)


def write_split(folder, prefix, n, shard_size, make, desc):
    with ShardWriter(folder, prefix, shard_size) as w:
        for i in tqdm(range(n), desc=desc, unit="img", leave=False, mininterval=1.0):
            image, caption, meta = make(i)
            w.write(f"{prefix}-{i:07d}", image, caption, meta)
