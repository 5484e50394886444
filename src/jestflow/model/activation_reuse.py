"""Activation reuse: the learner's scoring forward over the super-batch also serves the training forward.

A JEST step runs the learner forward over the whole super-batch (to score it), then trains on the
chosen fifth with the *same* weights, so the training forward recomputes activations scoring already
had. With reuse, scoring records the output of every linear layer (the matrix products: ~96% of a
ViT-B/16 forward's FLOPs, `Recorder`); the training step gathers the chosen rows (`Tape.take`) and
replays the forward (`Replayer`): the cheap parts — patch/token embedding, layer norms, GELU, the
attention core, residual adds — are recomputed under autograd, and each linear layer hands back its
recorded output through `_ReplayLinear`, whose backward is the ordinary linear backward. The
gradients are those of a fresh forward (same weights, same inputs); what it costs is memory: the
linear outputs of the whole super-batch (`tape_bytes_per_example`), held until the selection is made.

This is the accounting behind the paper's 233%: the sub-batch pays backward only (2 forward-equivalents)
on top of the super-batch forward. Flexi-JEST scores a coarse view, so only the text of its
full-resolution half and both towers of its coarse half can be replayed.

Single process only: under global selection a rank's chosen rows were mostly embedded by other ranks.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..core.flops import image_tokens


class Tape:
    """Linear-layer outputs in call order; each has the batch as its first dimension."""

    def __init__(self, outputs: list[torch.Tensor] | None = None):
        self.outputs = outputs if outputs is not None else []

    def take(self, idx: torch.Tensor) -> Tape:
        """The rows `idx` of every recorded output (a copy: the super-batch tape can then be freed)."""
        idx = idx.to(self.outputs[0].device) if self.outputs else idx
        return Tape([y.index_select(0, idx) for y in self.outputs])

    def rows(self, sl: slice) -> Tape:
        return Tape([y[sl] for y in self.outputs])

    def nbytes(self) -> int:
        return sum(y.numel() * y.element_size() for y in self.outputs)


class Recorder:
    """`linear` hook for the scoring forward: applies each layer and keeps its output."""

    def __init__(self):
        self.tape = Tape()

    def __call__(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        y = layer(x)
        self.tape.outputs.append(y)
        return y


class _ReplayLinear(torch.autograd.Function):
    """y = x Wᵀ + b without the product: the forward returns the recorded y, the backward is a linear's.

    Under bf16 autocast the recorded y is bf16 and the backward runs in bf16 too, with gradients cast
    back to the dtypes of x and of the fp32 parameters, as autocast's own cast nodes would."""

    @staticmethod
    def forward(ctx, x, weight, bias, y):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        dt = g.dtype
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g @ weight.to(dt)).to(x.dtype) if ctx.needs_input_grad[0] else None
        gw = (g2.t() @ x.reshape(-1, x.shape[-1]).to(dt)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        gb = g2.float().sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class Replayer:
    """`linear` hook for the training forward: hands back the recorded outputs in order."""

    def __init__(self, tape: Tape):
        self.tape, self.i = tape, 0

    def __call__(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self.i >= len(self.tape.outputs):
            raise ValueError(
                f"activation replay: the forward asked for linear output {self.i + 1}, "
                f"but the tape holds {len(self.tape.outputs)} (recorded with another model or view?)"
            )
        y = self.tape.outputs[self.i]
        self.i += 1
        if y.shape[:-1] != x.shape[:-1] or y.shape[-1] != layer.out_features:
            raise ValueError(
                f"activation replay: recorded output {self.i} has shape {tuple(y.shape)}, "
                f"the layer expects {(*x.shape[:-1], layer.out_features)}"
            )
        return _ReplayLinear.apply(x, layer.weight, layer.bias, y)


def tape_bytes_per_example(c: ModelConfig, patch_stride: int = 1, element_size: int = 2) -> int:
    """Bytes the tape holds per super-batch example: per block qkv (3w) + proj (w) + fc1 (4w) + fc2 (w)
    outputs per token, plus the two heads."""
    kept = image_tokens(c, patch_stride)
    image = c.depth * kept * 9 * c.width
    text = c.text_depth * c.context_length * 9 * c.text_width
    return (image + text + 2 * c.embed_dim) * element_size
