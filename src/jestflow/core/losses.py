"""Contrastive losses in unreduced (pairwise / per-example) form; JEST's scores are built from these.

Rows are images, columns texts: ``ℓ_ij`` pairs image i with text j, so the matrices are not symmetric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_pairwise(
    img: torch.Tensor, txt: torch.Tensor, log_t: torch.Tensor, bias: torch.Tensor, positive: torch.Tensor | None = None
) -> torch.Tensor:
    """SigLIP pairwise losses ``ℓ_ij = softplus(-z_ij (t u_i·v_j + β))``.

    `positive` marks z_ij = +1; by default the diagonal (img i matches txt i). Given explicitly it lets
    a caller build any block of the super-batch matrix (rows and columns from different index sets).
    """
    logits = log_t.exp() * (img @ txt.T) + bias
    if positive is None:
        positive = torch.eye(img.shape[0], txt.shape[0], dtype=torch.bool, device=img.device)
    z = positive.to(logits.dtype) * 2 - 1
    return F.softplus(-z * logits)


def sigmoid_loss(img, txt, log_t, bias) -> torch.Tensor:
    """SigLIP batch loss: the pairwise matrix summed and divided by the batch size."""
    return sigmoid_pairwise(img, txt, log_t, bias).sum() / img.shape[0]


def softmax_logits(img, txt, log_t) -> torch.Tensor:
    return log_t.exp() * (img @ txt.T)


def softmax_per_example(img, txt, log_t) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP per-example cross-entropies (image->text, text->image) within the batch."""
    logits = softmax_logits(img, txt, log_t)
    target = torch.arange(img.shape[0], device=img.device)
    return (F.cross_entropy(logits, target, reduction="none"), F.cross_entropy(logits.T, target, reduction="none"))


def softmax_loss(img, txt, log_t) -> torch.Tensor:
    i2t, t2i = softmax_per_example(img, txt, log_t)
    return (i2t.mean() + t2i.mean()) / 2


def batch_loss(kind: str, img, txt, log_t, bias) -> torch.Tensor:
    if kind == "sigmoid":
        return sigmoid_loss(img, txt, log_t, bias)
    if kind == "softmax":
        return softmax_loss(img, txt, log_t)
    raise ValueError(f"unknown loss {kind!r}")


def per_example_loss(kind: str, img, txt, log_t, bias) -> torch.Tensor:
    """Each example's share of its batch loss: row + column of the pairwise matrix (sigmoid) or the
    mean of its two cross-entropies (softmax)."""
    if kind == "sigmoid":
        m = sigmoid_pairwise(img, txt, log_t, bias)
        return (m.sum(1) + m.sum(0)) / 2
    i2t, t2i = softmax_per_example(img, txt, log_t)
    return (i2t + t2i) / 2
