"""Typed configuration: nested frozen dataclasses, named presets, YAML files and ``--set`` overrides.

Resolution order: defaults -> preset -> YAML file (``--config``) -> ``--set key=value`` (dotted keys,
values parsed as YAML scalars). ``model.size`` is special: it first resets every architecture field
to that size's values, so ``--set model.size=b16`` gives a real ViT-B/16. The resolved config is
written beside every output (`dump`), so a result can always be traced to what produced it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from typing import Any

import yaml

from . import storage
from .methods import KERNELS, METHODS, get_method

LOSSES = ("sigmoid", "softmax")
# The share of skipped samples a read tolerates unless configured (`*.max_bad_fraction`): the one default.
MAX_BAD_FRACTION = 0.01
ARCHS = ("vit", "hf-siglip")  # model.arch: jestflow's ViT two-tower | transformers' SiglipModel (model/hf_siglip.py)
SWITCHES = ("auto", "on", "off")
CACHE_DTYPES = ("float16", "int8")


def _one_of(prefix: str, name: str, value: Any, allowed) -> None:
    if value not in allowed:
        allowed = [str(a) for a in allowed]
        choices = (
            f"is not one of {', '.join(allowed)}"
            if len(allowed) > 3
            else f"must be {', '.join(allowed[:-1])} or {allowed[-1]}"
        )
        raise ValueError(f"{prefix}{name}={value!r} {choices}")


def _positive(prefix: str, obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ValueError(f"{prefix}{name}={getattr(obj, name)} must be positive")


DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (all 70,000 images)
# the embedded demo datasets (data/demo.py, data/glyphs.py); fashion-longtail: demo.py's scenes with a head of
# concepts repeated many times and a long tail of rare ones
DATASETS = ("fashion", "glyphs", "fashion-longtail")


@dataclass(frozen=True)
class DemoConfig:
    n_curated: int = 1000  # clean, small: what the reference model trains on
    n_pool: int = 6000  # noisy: what JEST curates
    n_eval: int = 500  # held out (Fashion-MNIST test images)
    image_size: int = 32  # canvas side in pixels
    shard_size: int = 500  # samples per tar shard
    seed: int = 0
    dataset: str = "fashion"  # fashion (Fashion-MNIST scenes) | glyphs (font glyphs, Unicode names) | fashion-longtail
    fashion_mnist_dir: str = DEFAULT_IDX_DIR  # full dataset when present; else the shipped subset
    # Pool noise: fraction of each type; the rest is clean.
    mismatch: float = 0.20  # caption of another, different-class sample
    wrong_attribute: float = 0.10  # caption with one attribute changed
    blank: float = 0.05  # constant or random-noise image ("corrupted")
    off_distribution: float = 0.05  # shapes and textures, not clothing, with a clothing caption
    junk_caption: float = 0.10  # "IMG_0412.jpg", "click to enlarge", ...
    near_duplicate: float = 0.10  # jittered copy of an earlier pool sample
    # fashion-longtail: a concept is a (class, colour) pair, 80 in all; `head_concepts` of them, drawn at
    # random, make up `head_share` of the curated set and the pool, the rest share what is left; eval is balanced
    head_concepts: int = 8
    head_share: float = 0.6

    def noise_mix(self) -> dict[str, float]:
        mix = {
            "mismatch": self.mismatch,
            "wrong-attribute": self.wrong_attribute,
            "blank": self.blank,
            "off-distribution": self.off_distribution,
            "junk-caption": self.junk_caption,
            "near-duplicate": self.near_duplicate,
        }
        for k, v in mix.items():
            if not 0 <= v <= 1:
                raise ValueError(f"demo noise ratio {k}={v} must be within [0, 1]")
        total = sum(mix.values())
        if total > 1:
            raise ValueError(f"demo noise ratios add up to {total:.3f} > 1")
        return {"clean": 1 - total, **mix}

    def validate(self, prefix: str = "demo.") -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"{prefix}dataset={self.dataset!r} must be {', '.join(DATASETS[:-1])} or {DATASETS[-1]}")
        for name in ("n_curated", "n_pool", "n_eval", "image_size", "shard_size", "head_concepts"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{prefix}{name}={getattr(self, name)} must be positive")
        if not 0 < self.head_share < 1:
            raise ValueError(f"{prefix}head_share={self.head_share} must be in (0, 1)")
        self.noise_mix()


@dataclass(frozen=True)
class ModelConfig:
    size: str = "tiny"  # label of the architecture below: tiny | small | s16 | b16
    image_size: int = 32  # input side; images of other sizes are resized
    patch_size: int = 4
    width: int = 96  # image tower width
    depth: int = 3  # image tower blocks
    heads: int = 4
    text_width: int = 96
    text_depth: int = 2
    text_heads: int = 4
    context_length: int = 16  # caption tokens (word level), the last one is EOS
    embed_dim: int = 64  # joint embedding dimension
    loss: str = "sigmoid"  # sigmoid (SigLIP) | softmax (CLIP)
    # vit: jestflow's own two-tower model | hf-siglip: transformers' SiglipModel of the same sizes (saved with
    # save_pretrained; its embedding dimension is `width`, so embed_dim follows it; sigmoid loss only)
    arch: str = "vit"

    def validate(self, prefix: str = "model.") -> None:
        _positive(
            prefix,
            self,
            "image_size",
            "patch_size",
            "width",
            "depth",
            "heads",
            "text_width",
            "text_depth",
            "text_heads",
            "context_length",
            "embed_dim",
        )
        _one_of(prefix, "loss", self.loss, LOSSES)
        _one_of(prefix, "arch", self.arch, ARCHS)
        if self.arch == "hf-siglip" and self.loss != "sigmoid":
            raise ValueError(f"{prefix}arch=hf-siglip trains with the sigmoid loss only (got {prefix}loss={self.loss})")
        if self.arch == "hf-siglip" and self.embed_dim != self.width:
            raise ValueError(
                f"{prefix}embed_dim={self.embed_dim} must equal {prefix}width={self.width} for hf-siglip "
                "(SigLIP's image embedding is its tower's width); leave embed_dim unset and it follows width"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"{prefix}image_size={self.image_size} is not divisible by {prefix}patch_size={self.patch_size}"
            )
        for name, heads in (("width", self.heads), ("text_width", self.text_heads)):
            if getattr(self, name) % heads:
                raise ValueError(f"{prefix}{name}={getattr(self, name)} is not divisible by its heads ({heads})")


# Architectures by name: what `model.size` resets the fields below to.
SIZE_FIELDS = ("image_size", "patch_size", "width", "depth", "heads", "text_width", "text_depth", "text_heads",
               "context_length", "embed_dim")  # fmt: skip
MODEL_SIZES: dict[str, dict[str, Any]] = {
    name: dict(zip(SIZE_FIELDS, values))
    for name, values in {
        #       image patch width depth heads text_w text_d text_h context embed
        "tiny": (32, 4, 96, 3, 4, 96, 2, 4, 16, 64),
        "small": (32, 4, 192, 6, 6, 192, 4, 6, 16, 128),
        "s16": (224, 16, 384, 12, 6, 384, 12, 6, 32, 384),
        "b16": (224, 16, 768, 12, 12, 768, 12, 12, 32, 768),
    }.items()
}


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 20  # linear warmup, then cosine to `min_lr_ratio * lr`
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0  # 0 disables

    def validate(self, prefix: str) -> None:
        _positive(prefix, self, "lr")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ValueError(
                f"{prefix}weight_decay, grad_clip and warmup_steps must be >= 0 "
                f"(got {self.weight_decay}, {self.grad_clip}, {self.warmup_steps})"
            )


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300  # optimiser steps (learner iterations)
    batch_size: int = 64  # examples trained on per step (the sub-batch b for JEST)
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint_every: int = 100  # steps between checkpoints (also the uid-log segment length)
    eval_every: int = 50  # steps between learning-curve evaluations (eval_schedule=linear); 0 disables evaluation
    eval_schedule: str = "linear"  # linear (every eval_every steps) | log (eval_points log-spaced steps, dense early)
    eval_points: int = 16  # curve points of the log schedule, from step 1 to the last
    log_every: int = 10
    shuffle_buffer: int = 1000  # samples mixed across shards; 0: none (each shard's order, shards shuffled)
    max_bad_fraction: float = MAX_BAD_FRACTION  # skipped samples tolerated before a stage fails
    threads: int = 0  # torch CPU threads; 0 = torch's default
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # torch.compile the towers: auto (on CUDA) | on | off
    decode_workers: int = 0  # image-decoding workers of the loader; 0 = auto (8 on CUDA, 1 = serial on CPU)
    decode_mode: str = "process"  # the workers are processes (off the training process's GIL) | thread
    reuse_activations: str = (
        "off"  # replay the scoring forward in the training step (model/activation_reuse.py): on | off |
    )
    #                                 auto (CUDA, one process, tape <= 40% of GPU memory). Off until measured on a GPU
    # learner only: start from these weights (a jestflow model folder, or a pretrained SigLIP: folder, gs:// prefix or
    # hub name); its architecture, sizes and tokenizer replace model.* and the reference's tokenizer. "": from scratch
    init_from: str = ""

    def validate(self, prefix: str) -> None:
        _positive(prefix, self, "steps", "batch_size", "checkpoint_every", "log_every")
        self.optim.validate(f"{prefix}optim.")
        if self.eval_every < 0 or self.decode_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError(
                f"{prefix}eval_every, decode_workers and shuffle_buffer must be >= 0 (got "
                f"{self.eval_every}, {self.decode_workers}, {self.shuffle_buffer})"
            )
        if not 0 <= self.max_bad_fraction <= 1:
            raise ValueError(f"{prefix}max_bad_fraction={self.max_bad_fraction} must be in [0, 1]")
        _one_of(prefix, "device", self.device, ("auto", "cpu", "cuda"))
        _one_of(prefix, "compile", self.compile, SWITCHES)
        _one_of(prefix, "reuse_activations", self.reuse_activations, SWITCHES)
        _one_of(prefix, "decode_mode", self.decode_mode, ("process", "thread"))
        if self.init_from and prefix == "reference.":
            raise ValueError("reference.init_from is not supported: score with a pretrained model (--reference-model)")
        _one_of(prefix, "eval_schedule", self.eval_schedule, ("linear", "log"))
        _positive(prefix, self, "eval_points")

    def eval_steps(self) -> set[int]:
        """The steps after which the learning curve is evaluated (always the last; none if eval_every=0).
        The log schedule puts points at steps^(k/(n-1)), k = 0..n-1: dense where curves are steep, so a
        method that reaches a target early is measured there instead of at a first point far away."""
        if not self.eval_every:
            return set()
        if self.eval_schedule == "log":
            n = self.eval_points
            return (
                {max(1, round(self.steps ** (k / (n - 1)))) for k in range(n)} | {self.steps} if n > 1 else {self.steps}
            )
        return set(range(self.eval_every, self.steps + 1, self.eval_every)) | {self.steps}


@dataclass(frozen=True)
class SelectConfig:
    method: str = "jest"  # a name in methods.METHODS (`jestflow train --help` lists them)
    filter_ratio: float = 0.8  # fraction of the super-batch discarded: N = b / (1 - f)
    n_chunks: int = 16  # Algorithm 1's chunks; b must be divisible by it
    temperature: float = 1.0  # divides the sampling logits; 1.0 is the paper's behaviour
    flexi_stride: int = 2  # flexi-jest: score (and train a random half of the batch) at patch size s x model.patch_size
    offline_keep: float = 0.0  # offline-easy-reference: pool fraction kept; 0 = 1 - filter_ratio
    block_elems: int = 1 << 26  # largest pairwise block computed at once (rows x chunk); bounds memory
    kernel: str = (
        "auto"  # sigmoid gains: fused (one Triton kernel per chunk, bf16 on CUDA) | torch | auto (fused on CUDA)
    )

    def validate(self, prefix: str = "select.") -> None:
        _one_of(prefix, "method", self.method, METHODS)
        _one_of(prefix, "kernel", self.kernel, KERNELS)
        if not 0 < self.filter_ratio < 1:
            raise ValueError(f"{prefix}filter_ratio={self.filter_ratio} must be in (0, 1)")
        _positive(prefix, self, "n_chunks", "temperature", "flexi_stride", "block_elems")
        if not 0 <= self.offline_keep <= 1:
            raise ValueError(f"{prefix}offline_keep={self.offline_keep} must be in [0, 1]")

    @property
    def method_info(self):
        """The method's registry entry (methods.METHODS)."""
        return get_method(self.method)


@dataclass(frozen=True)
class ScoreConfig:
    dtype: str = "float16"  # cached reference embeddings: float16 | int8 (per-row scale; half the bytes, docs/scale.md)

    def validate(self, prefix: str = "score.") -> None:
        _one_of(prefix, "dtype", self.dtype, CACHE_DTYPES)


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 256

    def validate(self, prefix: str = "eval.") -> None:
        _positive(prefix, self, "batch_size")


@dataclass(frozen=True)
class Config:
    demo: DemoConfig = field(default_factory=DemoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    reference: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, eval_every=0))
    learner: TrainConfig = field(default_factory=TrainConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> Config:
        """Each section checks its own fields; only rules across sections live here."""
        self.demo.validate()
        self.model.validate()
        self.reference.validate("reference.")
        self.learner.validate("learner.")
        self.select.validate()
        self.score.validate()
        self.eval.validate()
        grid = self.model.image_size // self.model.patch_size
        if self.select.method_info.low_res_scoring and grid % self.select.flexi_stride:
            raise ValueError(
                f"select.flexi_stride={self.select.flexi_stride} does not divide the image's patch grid "
                f"({grid} = model.image_size / model.patch_size)"
            )
        if self.select.method_info.online and self.learner.batch_size % self.select.n_chunks:
            raise ValueError(
                f"learner.batch_size={self.learner.batch_size} is not divisible by "
                f"select.n_chunks={self.select.n_chunks}"
            )
        return self

    def super_batch_size(self) -> int:
        """N = b / (1 - f), rounded to a whole number of examples (b for methods without a super-batch).
        The one place this formula lives."""
        if not self.select.method_info.online:
            return self.learner.batch_size
        return int(round(self.learner.batch_size / (1 - self.select.filter_ratio)))

    def with_method(self, method: str) -> Config:
        """This configuration with another selection method (validated)."""
        return replace(self, select=replace(self.select, method=method)).validate()


PRESETS = ("smoke", "demo", "bench", "b16-h100")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ) if isinstance(typ, str) else typ
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is str:
        if isinstance(value, bool):  # YAML 1.1 reads on/off (and yes/no) as booleans: `compile: off`
            return "on" if value else "off"
        if isinstance(value, (str, int, float)):
            return str(value)
    raise ValueError(f"config {key}={value!r}: expected {getattr(typ, '__name__', typ)}")


def _merge(obj: Any, updates: dict, prefix: str = "") -> Any:
    if not isinstance(updates, dict):
        raise ValueError(f"config {prefix or 'root'}: expected a mapping, got {updates!r}")
    known = {f.name: f for f in fields(obj)}
    changes = {}
    # `model.size` first resets the architecture, then explicit fields apply on top.
    if isinstance(obj, ModelConfig) and "size" in updates:
        size = updates["size"]
        if size not in MODEL_SIZES:
            raise ValueError(f"config {prefix}size={size!r} is not one of {', '.join(MODEL_SIZES)}")
        obj = replace(obj, size=size, **MODEL_SIZES[size])
    for key, value in updates.items():
        if key not in known:
            raise ValueError(f"unknown config key {prefix}{key} (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if is_dataclass(current):
            changes[key] = _merge(current, value, f"{prefix}{key}.")
        elif not (isinstance(obj, ModelConfig) and key == "size"):
            changes[key] = _coerce(value, known[key].type, prefix + key)
    obj = replace(obj, **changes)
    # hf-siglip: the joint embedding is the image tower's width, unless embed_dim is set here explicitly
    # (then validate() says if the two disagree)
    if isinstance(obj, ModelConfig) and obj.arch == "hf-siglip" and "embed_dim" not in updates:
        obj = replace(obj, embed_dim=obj.width)
    return obj


def parse_overrides(items: list[str]) -> dict:
    """``["learner.steps=200", "select.method=jest"]`` -> nested dict with YAML-typed values."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    text = resources.files("jestflow").joinpath(f"presets/{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def load_config(preset: str | None = "demo", file: str | None = None, overrides: list[str] | None = None) -> Config:
    cfg = Config()
    if preset:
        cfg = _merge(cfg, load_preset(preset))
    return override(cfg, [*(file_overrides(file) if file else []), *(overrides or [])])


def file_overrides(file: str) -> list[str]:
    """A YAML config file (local or gs://) as ``--set`` items, so it can travel wherever overrides do
    (the pipeline's `overrides` parameter, the benchmark's worker processes)."""
    if not storage.exists(file):
        raise ValueError(f"config file not found: {file}")
    try:
        with storage.open_read(file) as f:  # local path or gs:// (a PyTorchJob reads its config artifact)
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ValueError(f"config file not found: {file}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{file}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a mapping of config sections, got {type(data).__name__}")

    def flat(node: dict, prefix: str) -> list[str]:
        items = []
        for key, value in node.items():
            if isinstance(value, dict):
                items += flat(value, f"{prefix}{key}.")
            else:  # JSON is YAML: the value parses back to itself (a string stays a string)
                items.append(f"{prefix}{key}={json.dumps(value)}")
        return items

    return flat(data, "")


def override(cfg: Config, items: list[str]) -> Config:
    """`cfg` with ``--set``-style overrides (``["learner.steps=200", ...]``) applied and validated."""
    return _merge(cfg, parse_overrides(items)).validate()


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    return _merge(Config(), data).validate()


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
