"""The embedded default dataset: Fashion-MNIST objects composited into captioned scenes.

Each image is one Fashion-MNIST item, tinted with a colour, scaled to a size and placed at a
position on a textured background; its caption says all four attributes and the class from one of a
few templates. `curated/` is small and clean, `pool/` is noisy like web data (every sample's json
records its noise type), `eval/` is held out (Fashion-MNIST *test* images) and carries `classes.json`
for zero-shot classification.

`demo.dataset=fashion-longtail` draws the same scenes from a skewed mix of concepts ((class, colour)
pairs, `ConceptMix`): a few head concepts make up most of the curated set and the pool, a long tail of
rare ones the rest, while the eval split is balanced. Every sample's json records its `group` (head or
tail), so training records the mix it chose and evaluation reports R@1 per group.

Images: a class-balanced 5,000-image subset ships in ``assets/fashion_mnist_sample.npz`` (MIT
licence, Zalando Research). When Debian's ``dataset-fashion-mnist`` is installed (or
`fashion_mnist_dir` points to the four IDX files) all 70,000 are used instead.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources

import numpy as np

from .. import storage
from ..config import DEFAULT_IDX_DIR, DemoConfig
from .synthetic import JUNK_CAPTIONS, write_split

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 240),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 220),
    "cyan": (40, 220, 230),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
BACKGROUNDS = ("dark", "gray", "striped", "checkered")
TEMPLATES = (
    "a {size} {color} {cls} on the {pos} of a {bg} background",
    "a photo of a {color} {cls}, {size}, at the {pos}, {bg} background",
    "{size} {color} {cls} at the {pos} on {bg}",
    "a {bg} background with a {size} {color} {cls} at the {pos}",
)
ZERO_SHOT_TEMPLATES = ("a {}", "a photo of a {}", "a small {}", "a large {}")
NOISE_TYPES = ("clean", "mismatch", "wrong-attribute", "blank", "off-distribution", "junk-caption", "near-duplicate")


def read_idx(path: str) -> np.ndarray:
    """Read one (optionally gzipped) IDX file as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file (expected shape {shape})")
    return data.reshape(shape)


def read_idx_dir(folder: str):
    def find(stem):
        for name in (stem, stem + ".gz"):
            if os.path.exists(os.path.join(folder, name)):
                return read_idx(os.path.join(folder, name))
        raise ValueError(f"{folder}: missing {stem}[.gz]")

    return (
        (find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte")),
        (find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte")),
    )


def load_fashion_mnist(folder: str = DEFAULT_IDX_DIR):
    """((train_x, train_y), (test_x, test_y)) and a word on where they came from."""
    if folder and os.path.isdir(folder):
        try:
            return read_idx_dir(folder), f"{folder} (70,000 images)"
        except ValueError:
            pass
    with resources.files("jestflow").joinpath("assets/fashion_mnist_sample.npz").open("rb") as f:
        z = np.load(f)
        return (
            (z["train_images"], z["train_labels"]),
            (z["test_images"], z["test_labels"]),
        ), "shipped subset (5,000 images)"


class Composer:
    """Draws scenes and captions; all randomness from one numpy Generator."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator, concepts=None):
        self.images, self.labels, self.size, self.rng = images, labels, size, rng
        self.concepts = concepts  # a ConceptMix to draw (class, colour) from; None: uniform
        self.by_class = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]

    def attributes(self, src: int | None = None) -> dict:
        r = self.rng
        if src is None and self.concepts is not None:
            label, color = self.concepts.draw(r)
            src = int(r.choice(self.by_class[label]))
        else:
            src = int(r.integers(len(self.images))) if src is None else src
            color = str(r.choice(list(COLORS)))
        a = {
            "src": src,
            "label": int(self.labels[src]),
            "color": color,
            "size": str(r.choice(SIZES)),
            "pos": str(r.choice(POSITIONS)),
            "bg": str(r.choice(BACKGROUNDS)),
        }
        if self.concepts is not None:
            a["group"] = self.concepts.group(a["label"], a["color"])
        return a

    def background(self, kind: str) -> np.ndarray:
        n = self.size
        yy, xx = np.mgrid[0:n, 0:n]
        shade = self.rng.integers(-8, 9)
        if kind == "dark":
            base = np.full((n, n), 25 + shade)
        elif kind == "gray":
            base = np.full((n, n), 110 + shade)
        elif kind == "striped":
            base = np.where((yy // 3) % 2 == 0, 40, 100) + shade
        else:  # checkered
            base = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 30, 95) + shade
        bg = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
        return bg + self.rng.normal(0, 4, bg.shape)

    def draw(self, a: dict) -> np.ndarray:
        n = self.size
        side = max(8, round(n * (0.45 if a["size"] == "small" else 0.8)))
        from PIL import Image

        obj = np.asarray(Image.fromarray(self.images[a["src"]]).resize((side, side), Image.BILINEAR), np.float32) / 255
        margin = n - side
        mid = margin // 2
        x, y = {
            "left": (0, mid),
            "right": (margin, mid),
            "top": (mid, 0),
            "bottom": (mid, margin),
            "center": (mid, mid),
        }[a["pos"]]
        jx, jy = self.rng.integers(-1, 2, size=2)
        x, y = int(np.clip(x + jx, 0, margin)), int(np.clip(y + jy, 0, margin))
        img = self.background(a["bg"])
        color = np.array(COLORS[a["color"]], np.float32)
        patch = img[y : y + side, x : x + side]
        img[y : y + side, x : x + side] = patch * (1 - obj[..., None]) + color * obj[..., None]
        return np.clip(img, 0, 255).astype(np.uint8)

    def caption(self, a: dict) -> str:
        t = TEMPLATES[int(self.rng.integers(len(TEMPLATES)))]
        return t.format(size=a["size"], color=a["color"], cls=CLASSES[a["label"]], pos=a["pos"], bg=a["bg"])

    def off_distribution(self) -> np.ndarray:
        """Geometric shapes or pure texture: not a clothing item."""
        n, r = self.size, self.rng
        img = self.background(str(r.choice(BACKGROUNDS)))
        yy, xx = np.mgrid[0:n, 0:n]
        for _ in range(int(r.integers(1, 4))):
            cx, cy, rad = r.integers(0, n, 2).tolist() + [int(r.integers(3, n // 3))]
            mask = (
                (xx - cx) ** 2 + (yy - cy) ** 2 < rad**2
                if r.random() < 0.5
                else (abs(xx - cx) < rad) & (abs(yy - cy) < rad // 2 + 1)
            )
            img[mask] = r.integers(0, 256, 3)
        return np.clip(img, 0, 255).astype(np.uint8)

    def blank(self) -> np.ndarray:
        n, r = self.size, self.rng
        if r.random() < 0.5:
            return np.full((n, n, 3), r.integers(0, 256, 3), dtype=np.uint8)
        return r.integers(0, 256, (n, n, 3), dtype=np.uint8)


class ConceptMix:
    """fashion-longtail's concepts: (class, colour) pairs, `head` of them (drawn with the seed) taking
    `head_share` of the draws, the others sharing the rest evenly. `balanced` draws all alike (eval)."""

    def __init__(self, cfg: DemoConfig, balanced: bool = False):
        self.all = [(c, col) for c in range(len(CLASSES)) for col in COLORS]
        order = np.random.default_rng([cfg.seed, 7]).permutation(len(self.all))
        self.head = {self.all[i] for i in order[: cfg.head_concepts]}
        n_head = len(self.head)
        self.p = np.array(
            [
                1 / len(self.all)
                if balanced
                else (cfg.head_share / n_head if c in self.head else (1 - cfg.head_share) / (len(self.all) - n_head))
                for c in self.all
            ]  # fmt: skip
        )

    def draw(self, rng: np.random.Generator) -> tuple[int, str]:
        return self.all[int(rng.choice(len(self.all), p=self.p))]

    def group(self, label: int, color: str) -> str:
        return "head" if (label, color) in self.head else "tail"


def make_demo(out: str, cfg: DemoConfig) -> dict:
    """Write curated/, pool/ and eval/ under `out`; return a summary (also written as demo.json)."""
    cfg.validate()
    if cfg.dataset == "glyphs":
        from .glyphs import make_glyphs

        return make_glyphs(out, cfg)
    mix = cfg.noise_mix()
    ((xtr, ytr), (xte, yte)), source = load_fashion_mnist(cfg.fashion_mnist_dir)
    # Curated and pool draw from disjoint parts of the training images (a quarter and the other three
    # quarters); eval from the test images.
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(xtr))
    quarter = len(perm) // 4
    cur_idx, pool_idx = perm[:quarter], perm[quarter:]
    sz = cfg.image_size
    longtail = cfg.dataset == "fashion-longtail"
    skewed = ConceptMix(cfg) if longtail else None

    def meta(a: dict, noise: str, label: int | None = None) -> dict:
        m = {"label": a["label"] if label is None else label, "noise": noise}
        return {**m, "group": a["group"]} if "group" in a else m

    cur = Composer(xtr[cur_idx], ytr[cur_idx], sz, np.random.default_rng([cfg.seed, 1]), skewed)

    def curated(i):
        a = cur.attributes()
        return cur.draw(a), cur.caption(a), meta(a, "clean")

    pool = Composer(xtr[pool_idx], ytr[pool_idx], sz, np.random.default_rng([cfg.seed, 2]), skewed)
    kinds = list(mix)
    probs = np.array([mix[k] for k in kinds])
    history: list[tuple[np.ndarray, str, int]] = []

    def pool_sample(i):
        r = pool.rng
        noise = kinds[int(r.choice(len(kinds), p=probs))]
        if noise == "near-duplicate" and not history:
            noise = "clean"
        a = pool.attributes()
        image, caption, label = pool.draw(a), pool.caption(a), a["label"]
        if noise == "mismatch":
            other = pool.attributes()
            while other["label"] == a["label"]:
                other = pool.attributes()
            caption = pool.caption(other)
        elif noise == "wrong-attribute":
            attr = str(r.choice(["color", "size", "pos", "bg"]))
            choices = {"color": list(COLORS), "size": SIZES, "pos": POSITIONS, "bg": BACKGROUNDS}[attr]
            wrong = dict(a)
            wrong[attr] = str(r.choice([c for c in choices if c != a[attr]]))
            caption = pool.caption(wrong)
        elif noise == "blank":
            image = pool.blank()
        elif noise == "off-distribution":
            image, label = pool.off_distribution(), -1
        elif noise == "junk-caption":
            caption = str(r.choice(JUNK_CAPTIONS))
        elif noise == "near-duplicate":  # a copy of an earlier sample: its concept too
            image, caption, label, a = history[int(r.integers(len(history)))]
            image = np.clip(image.astype(np.int16) + r.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
        if noise in ("clean", "near-duplicate") and len(history) < 2000:
            history.append((image, caption, label, a))
        return image, caption, meta(a, noise, label)

    ev = Composer(
        xte, yte, sz, np.random.default_rng([cfg.seed, 3]), ConceptMix(cfg, balanced=True) if longtail else None
    )

    def evaluation(i):
        a = ev.attributes()
        return ev.draw(a), ev.caption(a), meta(a, "clean")

    write_split(storage.join(out, "curated"), "curated", cfg.n_curated, cfg.shard_size, curated, "curated")
    write_split(storage.join(out, "pool"), "pool", cfg.n_pool, cfg.shard_size, pool_sample, "pool")
    write_split(storage.join(out, "eval"), "eval", cfg.n_eval, cfg.shard_size, evaluation, "eval")
    storage.write_json(
        storage.join(out, "eval", "classes.json"), {"classes": CLASSES, "templates": list(ZERO_SHOT_TEMPLATES)}
    )
    summary = {"source": source, "config": cfg.__dict__, "noise_mix": mix}
    if longtail:
        summary["head_concepts"] = sorted(f"{CLASSES[c]}/{col}" for c, col in skewed.head)
    storage.write_json(storage.join(out, "demo.json"), summary)
    return summary


def demo_complete(out: str) -> bool:
    return storage.exists(storage.join(out, "demo.json"))
