"""A model folder, for either architecture: build, save, load. The one place that knows the files.

- `vit` (jestflow's own model): model.pt (config, vocabulary size, weights) and tokenizer.json;
- `hf-siglip`: what `SiglipModel.save_pretrained` writes (config.json, model.safetensors), tokenizer.json
  (a Hugging Face `tokenizers` file) with tokenizer_config.json (for `AutoTokenizer`), and jestflow.json
  (the architecture and jestflow's model fields), written last, so a folder without it is not a finished model.
Folders may be local paths or gs:// URIs (files go through jestflow's storage layer).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict

from .. import storage
from ..config import ModelConfig
from .tokenizer import HFTokenizer, build_tokenizer, load_tokenizer  # noqa: F401 - re-exported: the tokenizer of a folder

META = "jestflow.json"
HF_FILES = ("config.json", "model.safetensors")
# What a model hub's SigLIP folder holds of an hf-siglip folder (no jestflow.json): `load_pretrained` reads it
# as a pretrained model. The weights last, so a copy in this order is complete once they are there.
HUB_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")


def build_model(c: ModelConfig, tokenizer):
    """A new model of `c.arch` for `tokenizer`'s vocabulary."""
    if c.arch == "hf-siglip":
        from .hf_siglip import HFSiglip

        return HFSiglip.create(c, len(tokenizer), tokenizer.pad_id, getattr(tokenizer, "eos_id", None))
    from .two_tower import TwoTower

    return TwoTower(c, len(tokenizer))


def weights_file(folder: str) -> str:
    """The folder's weights (what a score cache's `reference_id` fingerprints)."""
    if storage.exists(storage.join(folder, META)):
        return storage.join(folder, "model.safetensors")
    return storage.join(folder, "model.pt")


def save_model_dir(model, tokenizer, folder: str, pretrained: str = "") -> None:
    """`pretrained`: where a pretrained model came from (a reference fetched, not trained: jestflow.json
    records it, and scoring charges no training cost for it)."""
    from .hf_siglip import HFSiglip

    if isinstance(model, HFSiglip):
        from .hf_siglip import quiet_transformers

        with tempfile.TemporaryDirectory() as tmp, quiet_transformers():
            model.hf.save_pretrained(tmp)
            for name in HF_FILES:
                with open(os.path.join(tmp, name), "rb") as f:
                    storage.write_bytes(storage.join(folder, name), f.read())
        tokenizer.save(storage.join(folder, "tokenizer.json"))
        if isinstance(tokenizer, HFTokenizer):  # a word-level vocabulary is jestflow's own: no transformers class
            storage.write_bytes(storage.join(folder, "tokenizer_config.json"), tokenizer.transformers_config())
        meta = {"arch": "hf-siglip", "model": asdict(model.config)}
        if pretrained:
            meta["pretrained"] = pretrained
        storage.write_json(storage.join(folder, META), meta)
        return
    from .two_tower import save_model

    save_model(model, storage.join(folder, "model.pt"))
    tokenizer.save(storage.join(folder, "tokenizer.json"))


def is_jestflow_dir(source: str) -> bool:
    return any(storage.exists(storage.join(source, name)) for name in (META, "model.pt"))


def model_config_of(hf_config) -> ModelConfig:
    """jestflow's model fields read off a `SiglipConfig` (a pretrained model's sizes)."""
    v, t = hf_config.vision_config, hf_config.text_config
    if getattr(t, "projection_size", v.hidden_size) != v.hidden_size:
        raise ValueError(f"a SigLIP whose text projection ({t.projection_size}) differs from its image width "
                         f"({v.hidden_size}) has no joint embedding jestflow can use")  # fmt: skip
    return ModelConfig(
        size="pretrained", image_size=v.image_size, patch_size=v.patch_size, width=v.hidden_size,
        depth=v.num_hidden_layers, heads=v.num_attention_heads, text_width=t.hidden_size,
        text_depth=t.num_hidden_layers, text_heads=t.num_attention_heads,
        context_length=t.max_position_embeddings, embed_dim=v.hidden_size, arch="hf-siglip",
    )  # fmt: skip


def load_pretrained(source: str, device: str = "cpu"):
    """(model, tokenizer) of a pretrained SigLIP: a folder `save_pretrained` wrote (with its tokenizer), a
    gs:// prefix holding one, or a Hugging Face Hub name such as google/siglip-base-patch16-224 (downloaded
    by transformers: needs the network). The tokenizer pads to the model's context length with its own
    pad token, as SigLIP was trained. Returns also an id of the weights (for the score cache)."""
    from transformers import AutoTokenizer, SiglipModel

    from .hf_siglip import HFSiglip, quiet_transformers
    from .tokenizer import HFTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        where = source
        if "://" in source:  # copy the prefix's files (config, weights, tokenizer) next to us
            for uri in storage.list_files(source):
                with storage.open_read(uri) as src, open(os.path.join(tmp, storage.basename(uri)), "wb") as dst:
                    dst.write(src.read())
            where = tmp
        elif not os.path.isdir(source) and os.path.exists(source):
            raise ValueError(f"{source}: a pretrained model is a folder (or gs:// prefix, or a hub name), not a file")
        try:
            with quiet_transformers():
                hf = SiglipModel.from_pretrained(where)
                auto = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{source}: not a loadable SigLIP model with its tokenizer ({str(e).splitlines()[0]})"
            ) from None
    backend = getattr(auto, "backend_tokenizer", None)
    if backend is None or auto.pad_token is None:
        raise ValueError(f"{source}: jestflow needs a fast tokenizer with a pad token (tokenizer.json)")
    c = model_config_of(hf.config)
    tokenizer = HFTokenizer.configure(backend, c.context_length, auto.pad_token)
    weights = os.path.join(source, "model.safetensors")
    if os.path.exists(weights):
        wid = storage.fingerprint(weights)
    elif "://" in source:
        wid = storage.fingerprint(storage.join(source, "model.safetensors"))
    else:
        wid = f"hf:{source}@{getattr(hf.config, '_commit_hash', None) or '?'}"
    return HFSiglip(c, hf).to(device), tokenizer, wid


def load_reference(source: str, device: str = "cpu"):
    """(model, tokenizer, weights id, pretrained?) of a reference: a jestflow model folder (one the pipeline
    fetched from `reference_model` counts as pretrained) or a pretrained SigLIP (`load_pretrained`)."""
    if is_jestflow_dir(source):
        model, tok = load_model_dir(source, device)
        meta_uri = storage.join(source, META)
        fetched = storage.exists(meta_uri) and bool(storage.read_json(meta_uri).get("pretrained"))
        return model, tok, storage.fingerprint(weights_file(source)), fetched
    return (*load_pretrained(source, device), True)


def load_model_dir(folder: str, device: str = "cpu"):
    """(model, tokenizer) from a folder `save_model_dir` wrote."""
    tokenizer = load_tokenizer(storage.join(folder, "tokenizer.json"))
    meta_uri = storage.join(folder, META)
    if not storage.exists(meta_uri):
        from .two_tower import load_model

        return load_model(storage.join(folder, "model.pt"), device), tokenizer
    from transformers import SiglipModel

    from .hf_siglip import HFSiglip, quiet_transformers

    meta = storage.read_json(meta_uri)
    if meta.get("arch") != "hf-siglip":
        raise ValueError(f"{meta_uri}: unknown model arch {meta.get('arch')!r}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in HF_FILES:
            with storage.open_read(storage.join(folder, name)) as src, open(os.path.join(tmp, name), "wb") as dst:
                dst.write(src.read())
        with quiet_transformers():
            hf = SiglipModel.from_pretrained(tmp)
    return HFSiglip(ModelConfig(**meta["model"]), hf).to(device), tokenizer
