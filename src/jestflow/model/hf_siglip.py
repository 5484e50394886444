"""`model.arch=hf-siglip`: transformers' `SiglipModel` behind jestflow's two-tower interface.

The learner (or a reference) is a stock SigLIP: its folder is what `save_pretrained` writes (config.json,
model.safetensors) plus the tokenizer (tokenizer.json, loadable by `PreTrainedTokenizerFast`) and
jestflow's own `jestflow.json`, so `SiglipModel.from_pretrained(folder)` loads the trained learner.

Sized by the same `model.*` fields as jestflow's ViT (widths, depths, heads, 4x MLPs, image and patch
size, context length). SigLIP's image embedding is its vision tower's width (the attention-pooling head
has no projection), so `model.embed_dim` follows `model.width` (config.py). Differences from `vit`:
the image tower pools with SigLIP's multi-head attention probe and the text tower takes the last
position (captions padded to the context length, no attention mask, as SigLIP was trained); the temperature
and bias are SigLIP's `logit_scale` and `logit_bias`; Flexi-JEST's coarse view downsamples the image by
the stride and lets SigLIP interpolate its position embeddings (`interpolate_pos_encoding`).
Activation reuse is not available (the towers have no linear-layer hook).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..core import flops


def siglip_config(c: ModelConfig, vocab_size: int, pad_id: int, eos_id: int | None = None):
    """A `SiglipConfig` sized by jestflow's model fields (the tower configs built first, so transformers
    does not fill in CLIP's token ids from its defaults)."""
    from transformers import SiglipConfig, SiglipTextConfig, SiglipVisionConfig

    text = SiglipTextConfig(
        vocab_size=vocab_size, hidden_size=c.text_width, intermediate_size=4 * c.text_width,
        num_hidden_layers=c.text_depth, num_attention_heads=c.text_heads, max_position_embeddings=c.context_length,
        projection_size=c.width, pad_token_id=pad_id, bos_token_id=pad_id,
        eos_token_id=pad_id if eos_id is None else eos_id,
    )  # fmt: skip
    vision = SiglipVisionConfig(
        image_size=c.image_size, patch_size=c.patch_size, hidden_size=c.width, intermediate_size=4 * c.width,
        num_hidden_layers=c.depth, num_attention_heads=c.heads, num_channels=3,
    )  # fmt: skip
    return SiglipConfig(text_config=text, vision_config=vision)


@contextlib.contextmanager
def quiet_transformers():
    """transformers' loading and saving without its progress bars and its warning about CLIP's token ids
    (raised while it compares a config with a default-built one, not about the model at hand)."""
    from transformers.utils import logging as tl

    old = tl.get_verbosity()
    tl.set_verbosity_error()
    tl.disable_progress_bar()
    try:
        yield
    finally:
        tl.set_verbosity(old)
        tl.enable_progress_bar()


def _no_hook(linear) -> None:
    from .two_tower import apply_linear

    if linear is not apply_linear:
        raise ValueError("activation reuse is not available for model.arch=hf-siglip (learner.reuse_activations=off)")


class HFSiglip(nn.Module):
    """jestflow's model interface over a `SiglipModel` (`hf`)."""

    def __init__(self, c: ModelConfig, hf):
        super().__init__()
        self.config, self.hf = c, hf
        self.vocab_size = hf.config.text_config.vocab_size

    @classmethod
    def create(cls, c: ModelConfig, vocab_size: int, pad_id: int, eos_id: int | None = None) -> HFSiglip:
        """A new model, SigLIP's initialisation (t = 10, b = -10)."""
        from transformers import SiglipModel

        hf = SiglipModel(siglip_config(c, vocab_size, pad_id, eos_id))
        with torch.no_grad():
            hf.logit_scale.fill_(math.log(10.0))
            hf.logit_bias.fill_(-10.0)
        return cls(c, hf)

    # the towers by jestflow's names (compile_towers compiles each in place)
    @property
    def image(self) -> nn.Module:
        return self.hf.vision_model

    @property
    def text(self) -> nn.Module:
        return self.hf.text_model

    @property
    def log_t(self) -> torch.Tensor:
        return self.hf.logit_scale.squeeze(0)

    @property
    def bias(self) -> torch.Tensor:
        return self.hf.logit_bias.squeeze(0)

    def encode_image(self, images: torch.Tensor, patch_stride: int = 1, linear=None) -> torch.Tensor:
        """`images`: B x H x W x 3 uint8; scaled to [-1, 1] (SigLIP's mean 0.5, std 0.5)."""
        if linear is not None:
            _no_hook(linear)
        size = self.config.image_size
        x = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if patch_stride > 1:
            x = F.avg_pool2d(x, patch_stride)
        out = self.hf.vision_model(pixel_values=x, interpolate_pos_encoding=patch_stride > 1).pooler_output
        return F.normalize(out.float(), dim=-1)

    def encode_text(self, tokens: torch.Tensor, linear=None) -> torch.Tensor:
        if linear is not None:
            _no_hook(linear)
        return F.normalize(self.hf.text_model(input_ids=tokens).pooler_output.float(), dim=-1)

    def forward(self, images, tokens, patch_stride: int = 1, image_linear=None, text_linear=None):
        return self.encode_image(images, patch_stride, image_linear), self.encode_text(tokens, text_linear)

    def flops_per_example(self, patch_stride: int = 1) -> float:
        return flops.forward_per_example(self.config, patch_stride)

    def linear_flops_per_example(self, patch_stride: int = 1, image: bool = True, text: bool = True) -> float:
        return flops.linear_per_example(self.config, patch_stride, image, text)
