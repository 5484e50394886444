"""Joint example selection (JEST, Evans et al. 2024, Algorithm 1, with its snippet's defects fixed).

Scores. For a super-batch of N candidates, ``A_ij`` is a pairwise score built from the unreduced
contrastive losses of the learner (L) and the reference (R): learnability ``ℓ^L_ij − ℓ^R_ij``,
hard-learner ``ℓ^L_ij``, easy-reference ``−ℓ^R_ij``. Under the sigmoid loss the score of a sub-batch
S is ``Σ_{i,j∈S} A_ij``, so the gain of adding candidate k to S is
``A_kk + Σ_{j∈S} (A_kj + A_jk)``.

Sampling (Algorithm 1, fixed). The first chunk is drawn ∝ exp(A_kk); every next chunk ∝ softmax of
the gain given all chunks so far, chosen examples excluded. We draw *indices* without replacement
via Gumbel-top-k (top c of logit + Gumbel noise), which equals sequential sampling ∝ softmax without
replacement and never exponentiates, so nothing overflows and nothing needs normalising.

Memory. The N x N matrix is never built: scorers keep per-candidate running sums and, after each
chunk C, add the two blocks ``A[:, C]`` and ``A[C, :]`` computed from embeddings, in row tiles of at
most `block_elems` entries. Memory O(tile x c), work O(N x b x d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..methods import KERNELS, SCORES, get_method


@dataclass
class Embeds:
    """One model's view of the super-batch: L2-normalised embeddings, temperature and bias."""

    img: torch.Tensor  # N x d
    txt: torch.Tensor  # N x d
    log_t: torch.Tensor  # scalar
    bias: torch.Tensor  # scalar (0 for softmax)

    def __len__(self) -> int:
        return self.img.shape[0]


def score_terms(score: str, learner: Embeds | None, reference: Embeds | None) -> list[tuple[float, Embeds]]:
    """The signed models whose pairwise losses add up to the score matrix A."""
    if score == "learnability":
        terms = [(1.0, learner), (-1.0, reference)]
    elif score == "hard-learner":
        terms = [(1.0, learner)]
    elif score == "easy-reference":
        terms = [(-1.0, reference)]
    else:
        raise ValueError(f"unknown score {score!r} (choose from {', '.join(SCORES)})")
    if any(e is None for _, e in terms):
        raise ValueError(f"score {score!r} needs embeddings from both learner and reference")
    return terms


def _tiles(n_rows: int, n_cols: int, block_elems: int):
    step = max(1, block_elems // max(1, n_cols))
    for r0 in range(0, n_rows, step):
        yield r0, min(n_rows, r0 + step)


class SigmoidScorer:
    """Gains under the sigmoid loss, from running sums of the score blocks."""

    def __init__(self, terms, block_elems: int = 1 << 26):
        self.terms, self.block_elems = terms, block_elems
        e0 = terms[0][1]
        self.n, self.device = len(e0), e0.img.device
        self.diag = sum(s * F.softplus(-(e.log_t.exp() * (e.img * e.txt).sum(1) + e.bias)) for s, e in terms)
        self.running = torch.zeros_like(self.diag)

    def logits(self) -> torch.Tensor:
        return self.diag + self.running

    def add(self, idx: torch.Tensor) -> None:
        """running_k += Σ_{j∈idx} (A_kj + A_jk), block by block."""
        for r0, r1 in _tiles(self.n, len(idx), self.block_elems):
            rows = torch.arange(r0, r1, device=self.device)
            positive = rows[:, None] == idx[None, :]  # z = +1 where the row is the column's own example
            acc = 0
            for s, e in self.terms:
                t = e.log_t.exp()
                col = F.softplus(-(positive * 2 - 1) * (t * (e.img[r0:r1] @ e.txt[idx].T) + e.bias))  # A[rows, idx]
                row = F.softplus(-(positive * 2 - 1) * (t * (e.txt[r0:r1] @ e.img[idx].T) + e.bias))  # A[idx, rows]ᵀ
                acc = acc + s * (col.sum(1) + row.sum(1))
            self.running[r0:r1] += acc


class FusedSigmoidScorer(SigmoidScorer):
    """The same gains as `SigmoidScorer`, each chunk's update one fused kernel (kernels.chunk_gains):
    block products on the tensor cores with the log-sigmoid and row sums in registers, nothing
    materialised. On CUDA the embeddings go in as bf16 (the diagonal stays fp32). Where the kernel
    cannot run (no Triton; CPU without TRITON_INTERPRET=1) this is exactly `SigmoidScorer`."""

    def __init__(self, terms, block_elems: int = 1 << 26, dtype: torch.dtype | None = None):
        from .kernels import triton_usable

        super().__init__(terms, block_elems)
        self.fused = triton_usable(self.device)
        if not self.fused:
            return
        dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        d = terms[0][1].img.shape[1]
        self.rows = torch.empty(len(terms), 2, self.n, d, dtype=dtype, device=self.device)  # T x 2 x N x d
        for k, (_, e) in enumerate(terms):  # copied in place: no fp32 intermediate of the whole stack
            self.rows[k, 0].copy_(e.img)
            self.rows[k, 1].copy_(e.txt)
        self.coef = torch.stack(
            [torch.stack([torch.ones((), device=self.device) * s, e.log_t.exp(), e.bias]) for s, e in terms]
        ).float()  # T x 3: sign, t, β (stays on the device)

    def add(self, idx: torch.Tensor) -> None:
        from .kernels import chunk_gains

        if not self.fused:
            return super().add(idx)
        # per term: the chunk's texts (against image rows) and the chunk's images (against text rows)
        cols = torch.stack([self.rows[:, 1, idx], self.rows[:, 0, idx]], dim=1)
        chunk_gains(self.rows, cols, idx, self.coef, self.running)


class SoftmaxScorer:
    """Conditional score under the softmax (CLIP) loss: candidate k's image->text and text->image
    cross-entropies with the normaliser over S ∪ {k} (learner minus reference, per the score).

    The softmax loss does not decompose into pairs, so this is the workable conditional score of
    JEST-NOTES.md rather than an exact batch gain. With S empty every CE is 0: the first chunk is
    uniform. Running log-sum-exps over S make each chunk cost O(N x c x d). A candidate already in S
    has its positive pair inside those sums: it is not added a second time.
    """

    def __init__(self, terms, block_elems: int = 1 << 26):
        self.terms, self.block_elems = terms, block_elems
        e0 = terms[0][1]
        self.n, self.device = len(e0), e0.img.device
        self.pos = [e.log_t.exp() * (e.img * e.txt).sum(1) for _, e in terms]
        self.lse_i2t = [torch.full_like(p, float("-inf")) for p in self.pos]
        self.lse_t2i = [torch.full_like(p, float("-inf")) for p in self.pos]
        self.member = torch.zeros(self.n, dtype=torch.bool, device=self.device)  # k ∈ S

    def logits(self) -> torch.Tensor:
        out = 0
        for (s, _), pos, a, b in zip(self.terms, self.pos, self.lse_i2t, self.lse_t2i):
            i2t = torch.where(self.member, a, torch.logaddexp(a, pos)) - pos  # normaliser over S ∪ {k}
            t2i = torch.where(self.member, b, torch.logaddexp(b, pos)) - pos
            out = out + s * (i2t + t2i) / 2
        return out

    def add(self, idx: torch.Tensor) -> None:
        self.member[idx] = True
        for r0, r1 in _tiles(self.n, len(idx), self.block_elems):
            for k, (_, e) in enumerate(self.terms):
                t = e.log_t.exp()
                i2t = torch.logsumexp(t * (e.img[r0:r1] @ e.txt[idx].T), dim=1)
                t2i = torch.logsumexp(t * (e.txt[r0:r1] @ e.img[idx].T), dim=1)
                self.lse_i2t[k][r0:r1] = torch.logaddexp(self.lse_i2t[k][r0:r1], i2t)
                self.lse_t2i[k][r0:r1] = torch.logaddexp(self.lse_t2i[k][r0:r1], t2i)


class DenseScorer:
    """Plain reference implementation from an explicit N x N matrix A (tests and benchmarks only)."""

    def __init__(self, A: torch.Tensor):
        self.A, self.diag = A, A.diagonal().clone()
        self.running = torch.zeros_like(self.diag)

    def logits(self) -> torch.Tensor:
        return self.diag + self.running

    def add(self, idx: torch.Tensor) -> None:
        self.running += self.A[:, idx].sum(1) + self.A[idx, :].sum(0)


class IndependentScorer:
    """Fixed per-example scores: each candidate judged alone, ignoring the rest of the batch."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def logits(self) -> torch.Tensor:
        return self.scores

    def add(self, idx: torch.Tensor) -> None:
        pass


def dense_score_matrix(terms) -> torch.Tensor:
    """The full N x N sigmoid score matrix (what the chunked scorer never builds)."""
    return sum(s * _sigmoid_matrix(e) for s, e in terms)


def _sigmoid_matrix(e: Embeds) -> torch.Tensor:
    from .losses import sigmoid_pairwise

    return sigmoid_pairwise(e.img, e.txt, e.log_t, e.bias)


def gumbel_topk(logits: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices drawn without replacement ∝ softmax(logits) (Gumbel-top-k trick)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    return torch.topk(logits + gumbel, k, sorted=True).indices


def sample_chunks(
    scorer, n_keep: int, n_chunks: int, generator: torch.Generator, temperature: float = 1.0
) -> torch.Tensor:
    """Algorithm 1: `n_keep` distinct indices in draw order, chunk by chunk, each chunk conditioned
    on all previous ones through `scorer`. The scorer is also updated with the last chunk, so its
    state afterwards describes the whole chosen set."""
    if n_keep % n_chunks:
        raise ValueError(f"batch size {n_keep} is not divisible by n_chunks={n_chunks}")
    n = scorer.logits().shape[0]
    if n_keep > n:
        raise ValueError(f"cannot keep {n_keep} of a super-batch of {n}")
    c = n_keep // n_chunks
    taken = torch.zeros(n, dtype=torch.bool, device=scorer.logits().device)
    chunks = []
    for _ in range(n_chunks):
        logits = (scorer.logits() / temperature).masked_fill(taken, float("-inf"))
        idx = gumbel_topk(logits, c, generator)
        taken[idx] = True
        chunks.append(idx)
        scorer.add(idx)
    return torch.cat(chunks)


def make_scorer(loss: str, terms, block_elems: int = 1 << 26, kernel: str = "torch"):
    """`kernel`: "fused" (kernels.chunk_gains), "torch" (plain tiled PyTorch, fp32) or "auto" (fused
    on CUDA). Softmax has one implementation."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown selection kernel {kernel!r} (choose from {', '.join(KERNELS)})")
    if loss == "sigmoid":
        fused = kernel == "fused" or (kernel == "auto" and terms[0][1].img.device.type == "cuda")
        return FusedSigmoidScorer(terms, block_elems) if fused else SigmoidScorer(terms, block_elems)
    if loss == "softmax":
        return SoftmaxScorer(terms, block_elems)
    raise ValueError(f"unknown loss {loss!r}")


def independent_scores(loss: str, terms, n_keep: int, block_elems: int = 1 << 26) -> torch.Tensor:
    """Per-example scores for `independent` selection (RHO-LOSS style).

    Sigmoid: the example's own pair plus its expected pairwise terms in a random batch of `n_keep`,
    ``A_kk + (b−1)/(N−1) Σ_{j≠k} (A_kj + A_jk)``. Softmax: its cross-entropies over the whole
    super-batch. Work O(N² d) in blocks, memory O(block).
    """
    scorer = make_scorer(loss, terms, block_elems)
    n = scorer.n
    everything = torch.arange(n, device=scorer.device)
    if loss == "sigmoid":
        scorer.add(everything)
        off = scorer.running - 2 * scorer.diag
        return scorer.diag + off * (n_keep - 1) / max(1, n - 1)
    scorer.add(everything)
    return scorer.logits()


@dataclass
class Selection:
    indices: torch.Tensor  # the chosen positions in the super-batch, in draw order
    chosen_diag: float  # mean per-example score A_kk over the chosen examples
    pool_diag: float  # mean A_kk over the whole super-batch
    chosen_score: float  # Σ_{i,j∈S} A_ij / |S|  (sigmoid joint only; nan otherwise)
    chunk_diag: tuple = ()  # mean A_kk of each chunk, in draw order (online methods)


def select(
    method: str,
    learner: Embeds | None,
    reference: Embeds | None,
    n_keep: int,
    n_chunks: int,
    generator: torch.Generator,
    loss: str = "sigmoid",
    temperature: float = 1.0,
    block_elems: int = 1 << 26,
    kernel: str = "auto",
) -> Selection:
    """Choose `n_keep` of the super-batch described by the embeddings, by `method`."""
    m = get_method(method)
    any_e = learner if learner is not None else reference
    n = len(any_e)
    if not m.online:
        idx = torch.randperm(n, generator=generator, device=generator.device)[:n_keep]
        return Selection(idx.to(any_e.img.device), float("nan"), float("nan"), float("nan"))
    sampler, score = m.sampler, m.score
    terms = score_terms(score, learner, reference)
    if sampler == "joint":
        scorer = make_scorer(loss, terms, block_elems, kernel)
        idx = sample_chunks(scorer, n_keep, n_chunks, generator, temperature)
        diag = scorer.diag if loss == "sigmoid" else scorer.logits()
        chosen_score = float(scorer.running[idx].sum() / 2 / n_keep) if loss == "sigmoid" else float("nan")
        if loss == "softmax":  # per-example score given the final chosen set
            diag = SoftmaxScorer(terms, block_elems)
            diag.add(idx)
            diag = diag.logits()
    else:
        diag = independent_scores(loss, terms, n_keep, block_elems)
        idx = sample_chunks(IndependentScorer(diag), n_keep, n_chunks, generator, temperature)
        chosen_score = float("nan")
    c = n_keep // n_chunks
    chunks = tuple(float(diag[idx[k * c : (k + 1) * c]].mean()) for k in range(n_chunks))
    return Selection(idx, float(diag[idx].mean()), float(diag.mean()), chosen_score, chunks)
