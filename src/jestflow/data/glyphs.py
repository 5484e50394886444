"""A second dataset of real image-text pairs: glyphs of the fonts matplotlib ships (DejaVu, STIX), each
captioned with its character's Unicode name and the font ("greek small letter alpha, serif italic").

Nothing here is invented by jestflow: the images are the fonts' own glyph outlines, the captions the
Unicode Character Database's names (Python's `unicodedata`). The pool mixes in noise whose cost
depends on the rest of the batch, the regime where joint selection should beat an offline filter:
- `hard-negative`: a correct pair whose image is indistinguishable from another script's letter
  (Latin A, Greek Alpha, Cyrillic A): fine-grained negatives, useful or confusing by company;
- `near-duplicate`: a cluster of re-renders of one glyph (jittered), redundant within a batch;
- `off-distribution`: correctly captioned symbols from blocks the curated set never shows (braille,
  box drawing, dingbats, arrows, mathematical operators);
- `mismatch` (another character's name), `tofu` (a character the font lacks: its empty box, captioned
  with the missing character's name) and `junk-caption`.
The DemoConfig ratios set the mix: mismatch, wrong_attribute (-> hard-negative), blank (-> tofu),
off_distribution, junk_caption, near_duplicate. Eval holds out two font faces; zero-shot classifies
the script (classes.json).
"""

from __future__ import annotations

import os
import unicodedata
from functools import cache

import numpy as np

from .. import storage
from ..config import DemoConfig
from .synthetic import JUNK_CAPTIONS, write_split

# (file, caption words) of the faces used; the last two are held out for evaluation
FACES = (
    ("DejaVuSans.ttf", "sans"),
    ("DejaVuSans-Bold.ttf", "sans bold"),
    ("DejaVuSans-Oblique.ttf", "sans oblique"),
    ("DejaVuSerif.ttf", "serif"),
    ("DejaVuSerif-Bold.ttf", "serif bold"),
    ("DejaVuSansMono.ttf", "mono"),
    ("STIXGeneral.ttf", "stix"),
    ("STIXGeneralBol.ttf", "stix bold"),
    ("DejaVuSerif-Italic.ttf", "serif italic"),
    ("STIXGeneralItalic.ttf", "stix italic"),
)
EVAL_FACES = 2
SCRIPTS = ("latin", "greek", "cyrillic", "armenian", "georgian", "hebrew")  # zero-shot classes (+ digit)
CLASSES = (*SCRIPTS, "digit")
ZERO_SHOT_TEMPLATES = ("{} letter", "a {} glyph", "{} character")
OFF_DISTRIBUTION = (
    "BRAILLE",
    "BOX",
    "DINGBAT",
    "LEFTWARDS",
    "RIGHTWARDS",
    "UPWARDS",
    "DOWNWARDS",
    "N-ARY",
    "WHITE",
    "BLACK",
    "CIRCLED",
)
# Look-alike capitals and small letters across Latin, Greek and Cyrillic (same outline in these fonts).
CONFUSABLES = (
    "AΑА",
    "BΒВ",
    "EΕЕ",
    "HΗН",
    "IΙІ",
    "KΚК",
    "MΜМ",
    "NΝ",
    "OΟО",
    "PΡР",
    "TΤТ",
    "XΧХ",
    "YΥ",
    "ZΖ",
    "aа",
    "cс",
    "eе",
    "oοо",
    "pр",
    "xх",
    "yу",
    "iі",
    "sѕ",
    "jј",
)


def _font_dir() -> str:
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


@cache
def _charmap(face: str) -> frozenset[int]:
    from matplotlib import ft2font

    return frozenset(ft2font.FT2Font(os.path.join(_font_dir(), face)).get_charmap())


@cache
def _font(face: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(os.path.join(_font_dir(), face), size)


def label_of(name: str) -> int:
    """The zero-shot class of a character's Unicode name (index into CLASSES), or -1."""
    first = name.split()[0].lower()
    if first in SCRIPTS:
        return SCRIPTS.index(first)
    return CLASSES.index("digit") if name.startswith("DIGIT ") else -1


def characters(faces) -> tuple[list[str], list[str]]:
    """(in-distribution letters and digits of the zero-shot scripts, off-distribution symbols) that
    every face in `faces` covers, with a Unicode name."""
    common = frozenset.intersection(*(_charmap(f) for f, _ in faces))
    letters, symbols = [], []
    for cp in sorted(common):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        if not name or unicodedata.category(ch).startswith(("C", "Z", "M")):
            continue
        if label_of(name) >= 0 and unicodedata.category(ch).startswith(("L", "N")):
            letters.append(ch)
        elif name.split()[0] in OFF_DISTRIBUTION:
            symbols.append(ch)
    return letters, symbols


class Renderer:
    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng

    def draw(self, ch: str, face: str, jitter: int = 0) -> np.ndarray:
        """`ch` in `face`, centred on a light background in a dark ink (shades vary), optionally shifted."""
        from PIL import Image, ImageDraw

        n, r = self.size, self.rng
        bg, ink = int(r.integers(200, 256)), int(r.integers(0, 70))
        img = Image.new("L", (n, n), bg)
        font = _font(face, max(8, int(n * 0.75)))
        left, top, right, bottom = font.getbbox(ch)
        x = (n - (right - left)) / 2 - left + (int(r.integers(-jitter, jitter + 1)) if jitter else 0)
        y = (n - (bottom - top)) / 2 - top + (int(r.integers(-jitter, jitter + 1)) if jitter else 0)
        ImageDraw.Draw(img).text((x, y), ch, fill=ink, font=font)
        return np.repeat(np.asarray(img, dtype=np.uint8)[:, :, None], 3, axis=2)


def caption(ch: str, words: str) -> str:
    return f"{unicodedata.name(ch).lower()}, {words}"


def make_glyphs(out: str, cfg: DemoConfig) -> dict:
    """Write curated/, pool/ and eval/ glyph splits under `out`; return a summary (also demo.json)."""
    cfg.validate()
    mix = cfg.noise_mix()
    train_faces, eval_faces = FACES[:-EVAL_FACES], FACES[-EVAL_FACES:]
    letters, symbols = characters(FACES)
    confusable = [s for s in CONFUSABLES if all(c in letters for c in s)]
    if not letters or not symbols or not confusable:
        raise ValueError(f"the fonts in {_font_dir()} cover too few characters for the glyph dataset")
    uncovered = [chr(cp) for cp in range(0x4E00, 0x4E80) if unicodedata.name(chr(cp), "")]  # CJK: no face has them
    rng = np.random.default_rng(cfg.seed)
    # curated: the clean letters of two thirds of the scripts' characters; the rest appear only in the pool
    order = rng.permutation(len(letters))
    curated_chars = [letters[i] for i in order[: 2 * len(letters) // 3]]

    def pair(r: Renderer, ch: str, face, jitter: int = 1):
        return r.draw(ch, face[0], jitter), caption(ch, face[1])

    cur = Renderer(cfg.image_size, np.random.default_rng([cfg.seed, 1]))

    def curated(i):
        ch = curated_chars[int(cur.rng.integers(len(curated_chars)))]
        image, text = pair(cur, ch, train_faces[int(cur.rng.integers(len(train_faces)))])
        return image, text, {"label": label_of(unicodedata.name(ch)), "noise": "clean"}

    pool = Renderer(cfg.image_size, np.random.default_rng([cfg.seed, 2]))
    kinds = {
        "mismatch": "mismatch",
        "wrong-attribute": "hard-negative",
        "blank": "tofu",
        "off-distribution": "off-distribution",
        "junk-caption": "junk-caption",
        "near-duplicate": "near-duplicate",
        "clean": "clean",
    }
    names, probs = list(mix), np.array([mix[k] for k in mix])
    cluster: list = []  # the glyph a run of near-duplicates re-renders

    def pool_sample(i):
        r = pool.rng
        noise = kinds[names[int(r.choice(len(names), p=probs))]]
        face = train_faces[int(r.integers(len(train_faces)))]
        ch = letters[int(r.integers(len(letters)))]
        if noise == "hard-negative":
            ch = str(r.choice(list(confusable[int(r.integers(len(confusable)))])))
        elif noise == "off-distribution":
            ch = symbols[int(r.integers(len(symbols)))]
        elif noise == "near-duplicate":
            if not cluster or r.random() < 0.2:  # a new cluster now and then; clusters of ~5
                cluster[:] = [ch, face]
            ch, face = cluster
        image, text = pair(pool, ch, face, jitter=2 if noise == "near-duplicate" else 1)
        if noise == "mismatch":
            other = ch
            while other == ch:
                other = letters[int(r.integers(len(letters)))]
            text = caption(other, face[1])
        elif noise == "tofu":
            missing = uncovered[int(r.integers(len(uncovered)))]
            image, text = pool.draw(missing, face[0]), caption(missing, face[1])
        elif noise == "junk-caption":
            text = str(r.choice(JUNK_CAPTIONS))
        label = label_of(unicodedata.name(ch)) if noise not in ("tofu", "mismatch") else -1
        return image, text, {"label": label, "noise": noise}

    ev = Renderer(cfg.image_size, np.random.default_rng([cfg.seed, 3]))

    def evaluation(i):
        ch = letters[int(ev.rng.integers(len(letters)))]
        image, text = pair(ev, ch, eval_faces[int(ev.rng.integers(len(eval_faces)))])
        return image, text, {"label": label_of(unicodedata.name(ch)), "noise": "clean"}

    write_split(storage.join(out, "curated"), "curated", cfg.n_curated, cfg.shard_size, curated, "curated")
    write_split(storage.join(out, "pool"), "pool", cfg.n_pool, cfg.shard_size, pool_sample, "pool")
    write_split(storage.join(out, "eval"), "eval", cfg.n_eval, cfg.shard_size, evaluation, "eval")
    storage.write_json(
        storage.join(out, "eval", "classes.json"), {"classes": list(CLASSES), "templates": list(ZERO_SHOT_TEMPLATES)}
    )
    summary = {
        "source": f"glyphs of {len(FACES)} font faces in {_font_dir()}, Unicode names",
        "config": cfg.__dict__,
        "noise_mix": {kinds[k]: v for k, v in mix.items()},
        "characters": {
            "letters": len(letters),
            "curated_letters": len(curated_chars),
            "symbols": len(symbols),
            "confusable_sets": len(confusable),
        },
    }
    storage.write_json(storage.join(out, "demo.json"), summary)
    return summary
