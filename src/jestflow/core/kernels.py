"""Fused selection kernel: one chunk's update of the JEST gains without materialising any block.

For a chunk of chosen columns `idx` (c of them) and every candidate row r of the super-batch,

    running[r] += Σ_terms sign · Σ_j [ softplus(-z_rj (t u_r·v_idx[j] + β))      (A[r, idx])
                                     + softplus(-z_rj (t v_r·u_idx[j] + β)) ]    (A[idx, r]ᵀ)

with z_rj = +1 where r is idx[j] and -1 elsewhere. The Triton kernel computes each BLOCK_M x BLOCK_N
tile of the two products on the tensor cores (bf16 in, fp32 accumulate), applies the log-sigmoid
and the sign in registers and reduces the tile to per-row sums, so no block is ever written to
memory: traffic is the embeddings, extra memory their bf16 copy and the chunk's columns.

The kernel runs on CUDA, and on CPU under TRITON_INTERPRET=1 (how the tests run it without a GPU);
where it cannot run, `selection.FusedSigmoidScorer` falls back to the plain tiled scorer.
"""

from __future__ import annotations

import os

import torch

try:  # Triton ships with CUDA PyTorch; CPU installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None


def triton_usable(device: torch.device) -> bool:
    if triton is None:
        return False
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:
    _CONFIGS_FLAT = (
        [
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=4),
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=3),
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128}, num_warps=8, num_stages=3),
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=4),
            # added for the paper-scale case (N = 163,840, c = 2,048), not yet measured on a GPU:
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 64}, num_warps=4, num_stages=4),
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=4),
            triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
        ]
        if os.environ.get("TRITON_INTERPRET") != "1"
        else [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1, num_stages=1)]
    )

    # The kernel adds into `out` in place, and Triton's autotuner times every config on the caller's own
    # arguments at the first call of each key (triton/runtime/autotuner.py, Autotuner.run and _bench), so
    # `out` is restored after each trial; without it, that call's gains were counted once per trial.
    @triton.autotune(configs=_CONFIGS_FLAT, key=["N", "C", "D", "T"], restore_value=["out_ptr"])
    @triton.jit
    def _chunk_gain_kernel_flat(
        rows_ptr,
        cols_ptr,
        idx_ptr,
        coef_ptr,
        out_ptr,
        N,
        C: tl.constexpr,
        D: tl.constexpr,
        stride_rt,
        stride_rp,
        stride_rn,
        stride_ct,
        stride_cp,
        stride_cn,
        T: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        """One program per BLOCK_M rows; one flat loop over (term, direction, column tile, k step), so the
        software pipeline never drains between column tiles; the epilogue (log-sigmoid, signs, row
        sums) runs on the last k step of each tile (the pattern of Triton's persistent matmul). A
        nested-loop version (a loop per column tile) measured the same at N = 163,840 and 1.7x slower
        at N = 20,480 on an H200, and was removed."""
        pid = tl.program_id(0)
        rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        rn = tl.arange(0, BLOCK_N)
        row_ok = rm < N
        NJ: tl.constexpr = (C + BLOCK_N - 1) // BLOCK_N
        NK: tl.constexpr = (D + BLOCK_K - 1) // BLOCK_K
        total = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for it in range(0, T * 2 * NJ * NK):
            kk = it % NK
            j = (it // NK) % NJ
            tp = it // (NK * NJ)  # term * 2 + direction
            term = tp // 2
            p = tp % 2
            k0 = kk * BLOCK_K
            cn = j * BLOCK_N + rn
            col_ok = cn < C
            k_ok = (k0 + rk) < D
            a = tl.load(
                rows_ptr + term * stride_rt + p * stride_rp + rm[:, None] * stride_rn + (k0 + rk)[None, :],
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
            )
            b = tl.load(
                cols_ptr + term * stride_ct + p * stride_cp + cn[:, None] * stride_cn + (k0 + rk)[None, :],
                mask=col_ok[:, None] & k_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(a, tl.trans(b), acc)
            if kk == NK - 1:
                sign = tl.load(coef_ptr + 3 * term)
                t = tl.load(coef_ptr + 3 * term + 1)
                beta = tl.load(coef_ptr + 3 * term + 2)
                owner = tl.load(idx_ptr + cn, mask=col_ok, other=-1)
                positive = rm[:, None] == owner[None, :]
                x = tl.where(positive, -1.0, 1.0) * (t * acc + beta)  # -z * logit
                sp = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
                sp = tl.where(col_ok[None, :], sp, 0.0)
                total += sign * tl.sum(sp, axis=1)
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        prev = tl.load(out_ptr + rm, mask=row_ok, other=0.0)
        tl.store(out_ptr + rm, prev + total, mask=row_ok)


def chunk_gains(
    rows: torch.Tensor, cols: torch.Tensor, idx: torch.Tensor, coef: torch.Tensor, out: torch.Tensor
) -> None:
    """out[r] += the chunk's gain terms for every row r (see the module docstring).

    rows: T x 2 x N x d (per term: image rows, text rows), cols: T x 2 x c x d (per term: the chunk's
    text, the chunk's image), idx: c row indices of the chunk, coef: T x 3 (sign, t, β) fp32,
    out: N fp32, updated in place."""
    if not triton_usable(rows.device):
        raise RuntimeError(
            f"the fused selection kernel cannot run on {rows.device} (no Triton, or on CPU without TRITON_INTERPRET=1)"
        )
    T, _, N, D = rows.shape
    rows, cols = rows.contiguous(), cols.contiguous()
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]),)  # noqa: E731
    _chunk_gain_kernel_flat[grid](
        rows,
        cols,
        idx.contiguous(),
        coef.contiguous(),
        out,
        N,
        cols.shape[2],
        D,
        rows.stride(0),
        rows.stride(1),
        rows.stride(2),
        cols.stride(0),
        cols.stride(1),
        cols.stride(2),
        T=T,
    )
