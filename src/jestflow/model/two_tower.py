"""Two-tower image-text model: a ViT image tower and a Transformer text tower (SigLIP/CLIP style).

Attention uses PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels on CUDA).
Embeddings come out L2-normalised; the model owns the learnable temperature ``log_t`` and bias.

Every linear layer of a tower is applied through an optional `linear(layer, x)` hook (default: the
layer itself). Activation reuse (activation_reuse.py) uses it to record the layers' outputs in the scoring
forward and to replay them in the training step, so the block maths is written once, here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..core import flops

Linear = Callable[[nn.Linear, torch.Tensor], torch.Tensor]


def apply_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return layer(x)


class Block(nn.Module):
    """Pre-norm Transformer block."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, linear: Linear = apply_linear) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = linear(self.qkv, self.ln1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + linear(self.proj, a.transpose(1, 2).reshape(b, n, w))
        fc1, act, fc2 = self.mlp
        return x + linear(fc2, act(linear(fc1, self.ln2(x))))


class ImageTower(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.image_size, n = c.image_size, (c.image_size // c.patch_size) ** 2
        self.patch = nn.Conv2d(3, c.width, c.patch_size, c.patch_size)
        self.pos = nn.Parameter(torch.randn(1, n, c.width) * 0.02)
        self.blocks = nn.ModuleList(Block(c.width, c.heads) for _ in range(c.depth))
        self.ln = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.embed_dim)

    def forward(self, images: torch.Tensor, patch_stride: int = 1, linear: Linear = apply_linear) -> torch.Tensor:
        """`images`: B x H x W x 3 uint8 (or float in [0, 255]).

        `patch_stride` s > 1 sees the whole image at an effective patch size of s·p (Flexi-JEST's cheap
        view, FlexiViT-style): the image is area-downsampled by s and the s·p patches become p patches,
        so the learned patch embedding applies unchanged; the position embeddings are resized
        bilinearly from the g x g grid to (g/s) x (g/s). 1/s² of the tokens, every pixel seen. This is
        FlexiViT's pseudo-inverse resize of the patch kernel with area averaging in place of the
        pseudo-inverse, and it runs the patch embedding on s² fewer pixels."""
        x = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if patch_stride > 1:
            x = F.avg_pool2d(x, patch_stride)
        x = self.patch(x.contiguous(memory_format=torch.channels_last))
        return linear(
            self.head,
            self.ln(self._blocks(x.flatten(2).transpose(1, 2) + self.position(patch_stride), linear)).mean(dim=1),
        )

    def position(self, patch_stride: int = 1) -> torch.Tensor:
        """Position embeddings for the token grid of `patch_stride` (bilinear resize of the learned grid)."""
        if patch_stride == 1:
            return self.pos
        g = self.image_size // self.patch.stride[0]
        grid = self.pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        small = F.interpolate(
            grid, size=(g // patch_stride, g // patch_stride), mode="bilinear", align_corners=False, antialias=True
        )
        return small.permute(0, 2, 3, 1).reshape(1, -1, self.pos.shape[-1])

    def _blocks(self, x: torch.Tensor, linear: Linear) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, None, linear)
        return x


class TextTower(nn.Module):
    def __init__(self, c: ModelConfig, vocab_size: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, c.text_width)
        self.pos = nn.Parameter(torch.randn(1, c.context_length, c.text_width) * 0.02)
        self.blocks = nn.ModuleList(Block(c.text_width, c.text_heads) for _ in range(c.text_depth))
        self.ln = nn.LayerNorm(c.text_width)
        self.head = nn.Linear(c.text_width, c.embed_dim)

    def forward(self, tokens: torch.Tensor, linear: Linear = apply_linear) -> torch.Tensor:
        valid = tokens != 0  # padding id is 0; every caption has at least its EOS token
        x = self.tok(tokens) + self.pos[:, : tokens.shape[1]]
        mask = valid[:, None, None, :]
        for blk in self.blocks:
            x = blk(x, mask, linear)
        x = self.ln(x)
        w = valid.unsqueeze(-1).to(x.dtype)
        return linear(self.head, (x * w).sum(1) / w.sum(1))


class TwoTower(nn.Module):
    def __init__(self, c: ModelConfig, vocab_size: int):
        super().__init__()
        self.config, self.vocab_size = c, vocab_size
        self.image = ImageTower(c)
        self.text = TextTower(c, vocab_size)
        # SigLIP initialisation: t = 10, b = -10. CLIP: t = 1/0.07, no bias.
        sig = c.loss == "sigmoid"
        self.log_t = nn.Parameter(torch.tensor(math.log(10.0) if sig else math.log(1 / 0.07)))
        self.bias = nn.Parameter(torch.tensor(-10.0 if sig else 0.0), requires_grad=sig)

    def encode_image(self, images: torch.Tensor, patch_stride: int = 1, linear: Linear = apply_linear) -> torch.Tensor:
        return F.normalize(self.image(images, patch_stride, linear).float(), dim=-1)

    def encode_text(self, tokens: torch.Tensor, linear: Linear = apply_linear) -> torch.Tensor:
        return F.normalize(self.text(tokens, linear).float(), dim=-1)

    def forward(
        self,
        images: torch.Tensor,
        tokens: torch.Tensor,
        patch_stride: int = 1,
        image_linear: Linear = apply_linear,
        text_linear: Linear = apply_linear,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images, patch_stride, image_linear), self.encode_text(tokens, text_linear)

    # FLOPs: the formulas live in core/flops.py; these read them for this model's configuration.
    def flops_per_example(self, patch_stride: int = 1) -> float:
        return flops.forward_per_example(self.config, patch_stride)

    def linear_flops_per_example(self, patch_stride: int = 1, image: bool = True, text: bool = True) -> float:
        return flops.linear_per_example(self.config, patch_stride, image, text)


def save_model(model: TwoTower, path: str) -> None:
    from dataclasses import asdict

    from .. import storage

    with storage.atomic_path(path) as tmp:
        torch.save(
            {"config": asdict(model.config), "vocab_size": model.vocab_size, "state_dict": model.state_dict()}, tmp
        )


def load_model(path: str, device: str = "cpu") -> TwoTower:
    from .. import storage

    try:
        with storage.open_read(path) as f:
            blob = torch.load(f, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, KeyError) as e:
        raise ValueError(f"{path}: not a jestflow model file ({e})") from None
    model = TwoTower(ModelConfig(**blob["config"]), blob["vocab_size"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device)
