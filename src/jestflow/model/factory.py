"""A model folder, for either architecture: build, save, load. The one place that knows the files.

- `vit` (jestflow's own model): model.pt (config, vocabulary size, weights) and tokenizer.json;
- `hf-siglip`: what `SiglipModel.save_pretrained` writes (config.json, model.safetensors), tokenizer.json
  (a Hugging Face `tokenizers` file) and jestflow.json (the architecture and jestflow's model fields),
  written last, so a folder without it is not a finished model.
Folders may be local paths or gs:// URIs (files go through jestflow's storage layer).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict

from .. import storage
from ..config import ModelConfig
from .tokenizer import build_tokenizer, load_tokenizer  # noqa: F401 - re-exported: the tokenizer of a folder

META = "jestflow.json"
HF_FILES = ("config.json", "model.safetensors")


def build_model(c: ModelConfig, tokenizer):
    """A new model of `c.arch` for `tokenizer`'s vocabulary."""
    if c.arch == "hf-siglip":
        from .hf_siglip import HFSiglip

        return HFSiglip.create(c, len(tokenizer), tokenizer.pad_id)
    from .two_tower import TwoTower

    return TwoTower(c, len(tokenizer))


def weights_file(folder: str) -> str:
    """The folder's weights (what a score cache's `reference_id` fingerprints)."""
    if storage.exists(storage.join(folder, META)):
        return storage.join(folder, "model.safetensors")
    return storage.join(folder, "model.pt")


def save_model_dir(model, tokenizer, folder: str) -> None:
    from .hf_siglip import HFSiglip

    if isinstance(model, HFSiglip):
        with tempfile.TemporaryDirectory() as tmp:
            model.hf.save_pretrained(tmp)
            for name in HF_FILES:
                with open(os.path.join(tmp, name), "rb") as f:
                    storage.write_bytes(storage.join(folder, name), f.read())
        tokenizer.save(storage.join(folder, "tokenizer.json"))
        storage.write_json(storage.join(folder, META), {"arch": "hf-siglip", "model": asdict(model.config)})
        return
    from .two_tower import save_model

    save_model(model, storage.join(folder, "model.pt"))
    tokenizer.save(storage.join(folder, "tokenizer.json"))


def load_model_dir(folder: str, device: str = "cpu"):
    """(model, tokenizer) from a folder `save_model_dir` wrote."""
    tokenizer = load_tokenizer(storage.join(folder, "tokenizer.json"))
    meta_uri = storage.join(folder, META)
    if not storage.exists(meta_uri):
        from .two_tower import load_model

        return load_model(storage.join(folder, "model.pt"), device), tokenizer
    from transformers import SiglipModel

    from .hf_siglip import HFSiglip

    meta = storage.read_json(meta_uri)
    if meta.get("arch") != "hf-siglip":
        raise ValueError(f"{meta_uri}: unknown model arch {meta.get('arch')!r}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in HF_FILES:
            with storage.open_read(storage.join(folder, name)) as src, open(os.path.join(tmp, name), "wb") as dst:
                dst.write(src.read())
        hf = SiglipModel.from_pretrained(tmp)
    return HFSiglip(ModelConfig(**meta["model"]), hf).to(device), tokenizer
