"""Parity and property tests of joint example selection against plain dense implementations."""

import math

import pytest
import torch
import torch.nn.functional as F

from jestflow.core import losses
from jestflow.core.selection import (
    DenseScorer,
    Embeds,
    IndependentScorer,
    SigmoidScorer,
    SoftmaxScorer,
    dense_score_matrix,
    independent_scores,
    sample_chunks,
    score_terms,
    select,
)


def embeds(n, d, seed, dtype=torch.float64, log_t=2.3, bias=-10.0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    # texts correlated with images so the diagonal matters, as in a trained model
    txt = F.normalize(img + 0.8 * torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    return Embeds(img, txt, torch.tensor(log_t, dtype=dtype), torch.tensor(bias, dtype=dtype))


def dense_algorithm1(A, n_keep, n_chunks, generator):
    """The fixed Algorithm 1, written plainly over a dense matrix and an explicit chosen set."""
    n, c = A.shape[0], n_keep // n_chunks
    chosen = []
    for _ in range(n_chunks):
        logits = torch.empty(n, dtype=A.dtype)
        for k in range(n):
            logits[k] = A[k, k] + sum(A[k, j] + A[j, k] for j in chosen) if chosen else A[k, k]
        logits[chosen] = float("-inf")
        u = torch.rand(n, generator=generator, dtype=A.dtype)
        g = -torch.log(-torch.log(u.clamp_min(torch.finfo(A.dtype).tiny)))
        chosen += torch.topk(logits + g, c).indices.tolist()
    return torch.tensor(chosen)


@pytest.mark.parametrize(
    "n,b,chunks,score",
    [
        pytest.param(40, 8, 4, "learnability", id="n40-b8-c4-learnability"),
        pytest.param(64, 16, 16, "learnability", id="n64-b16-c16"),
        pytest.param(50, 10, 1, "hard-learner", id="one-chunk-hard-learner"),
        pytest.param(30, 12, 3, "easy-reference", id="easy-reference"),
    ],
)
def test_chunked_matches_dense_algorithm1(n, b, chunks, score):
    terms = score_terms(score, embeds(n, 8, 1), embeds(n, 8, 2, log_t=1.5, bias=-3.0))
    A = dense_score_matrix(terms)
    got = sample_chunks(SigmoidScorer(terms, block_elems=37), b, chunks, torch.Generator().manual_seed(7))
    want = dense_algorithm1(A, b, chunks, torch.Generator().manual_seed(7))
    assert got.tolist() == want.tolist()
    assert len(set(got.tolist())) == b


def test_running_sums_equal_dense_block_sums():
    terms = score_terms("learnability", embeds(33, 6, 3), embeds(33, 6, 4))
    A = dense_score_matrix(terms)
    s, d = SigmoidScorer(terms, block_elems=10), DenseScorer(A)
    for idx in (torch.tensor([3, 7]), torch.tensor([0, 32, 5])):
        s.add(idx), d.add(idx)
    torch.testing.assert_close(s.logits(), d.logits())
    torch.testing.assert_close(s.diag, A.diagonal())


@pytest.mark.parametrize("n,b,chunks", [(20, 20, 4), (100, 80, 16), (257, 32, 8)])
def test_exactly_batch_unique_indices(n, b, chunks, gen):
    for method in ("jest", "independent", "uniform", "hard-learner", "easy-reference"):
        sel = select(method, embeds(n, 5, 0, torch.float32), embeds(n, 5, 1, torch.float32), b, chunks, gen(3))
        idx = sel.indices.tolist()
        assert len(idx) == b and len(set(idx)) == b and all(0 <= i < n for i in idx), method


def test_joint_reduces_to_independent_when_matrix_is_diagonal():
    g = torch.Generator().manual_seed(0)
    diag = torch.randn(60, generator=g, dtype=torch.float64) * 2
    joint = sample_chunks(DenseScorer(torch.diag(diag)), 24, 6, torch.Generator().manual_seed(5))
    indep = sample_chunks(IndependentScorer(diag), 24, 6, torch.Generator().manual_seed(5))
    assert joint.tolist() == indep.tolist()


def test_first_chunk_distribution_is_softmax_of_diagonal():
    """Over many draws, a 1-of-N first chunk is drawn with probability softmax(A_kk)."""
    diag = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    draws = 20000
    for _ in range(draws):
        counts[sample_chunks(IndependentScorer(diag), 1, 1, g)] += 1
    torch.testing.assert_close(counts / draws, torch.softmax(diag, 0).float(), atol=0.012, rtol=0)


def test_conditioning_prefers_examples_that_pair_well_with_the_chosen():
    """A candidate with a large off-diagonal score with an already-chosen example is drawn next."""
    A = torch.zeros(6, 6, dtype=torch.float64)
    A[0, 0] = 50.0  # certainly the first chunk
    A[0, 4] = A[4, 0] = 30.0  # and 4 pairs with it
    idx = sample_chunks(DenseScorer(A), 2, 2, torch.Generator().manual_seed(0))
    assert idx.tolist() == [0, 4]


@pytest.mark.parametrize("n", [1, 5, 17])
def test_sigmoid_pairwise_sums_to_batch_loss(n):
    e = embeds(n, 7, n)
    m = losses.sigmoid_pairwise(e.img, e.txt, e.log_t, e.bias)
    t = e.log_t.exp()
    brute = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            brute += math.log1p(math.exp(-z * (t * (e.img[i] @ e.txt[j]) + e.bias)))
    assert m.shape == (n, n)
    assert float(m.sum()) == pytest.approx(brute, rel=1e-9)
    assert float(losses.sigmoid_loss(e.img, e.txt, e.log_t, e.bias)) == pytest.approx(brute / n, rel=1e-9)


def test_sigmoid_batch_score_is_sum_of_pairwise_matrix():
    terms = score_terms("learnability", embeds(24, 4, 5), embeds(24, 4, 6))
    sel = select("jest", terms[0][1], terms[1][1], 8, 4, torch.Generator().manual_seed(2), loss="sigmoid")
    A = dense_score_matrix(terms)
    S = sel.indices
    assert sel.chosen_score == pytest.approx(float(A[S][:, S].sum()) / 8, rel=1e-9)


def softmax_brute(e: Embeds, S: list, k: int) -> float:
    """Candidate k's (i2t + t2i)/2 cross-entropy with the normaliser over S ∪ {k}, by loops."""
    t = float(e.log_t.exp())
    members = S + [k]
    i2t = [t * float(e.img[k] @ e.txt[j]) for j in members]
    t2i = [t * float(e.txt[k] @ e.img[j]) for j in members]
    pos = t * float(e.img[k] @ e.txt[k])
    lse = lambda xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
    return ((lse(i2t) - pos) + (lse(t2i) - pos)) / 2


def test_softmax_scorer_matches_brute_force_conditional_loss():
    lrn, ref = embeds(20, 5, 8, log_t=1.0, bias=0.0), embeds(20, 5, 9, log_t=1.2, bias=0.0)
    terms = score_terms("learnability", lrn, ref)
    sc = SoftmaxScorer(terms, block_elems=13)
    S = [2, 11, 5, 17]
    sc.add(torch.tensor(S[:2])), sc.add(torch.tensor(S[2:]))
    got = sc.logits()
    for k in range(20):
        if k in S:
            continue
        want = softmax_brute(lrn, S, k) - softmax_brute(ref, S, k)
        assert float(got[k]) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_softmax_per_example_matches_batch_loss():
    e = embeds(9, 4, 1, log_t=1.0, bias=0.0)
    i2t, t2i = losses.softmax_per_example(e.img, e.txt, e.log_t)
    assert float((i2t.mean() + t2i.mean()) / 2) == pytest.approx(float(losses.softmax_loss(e.img, e.txt, e.log_t)))


def test_independent_sigmoid_scores_expected_batch_context():
    lrn, ref = embeds(15, 4, 2), embeds(15, 4, 3)
    terms = score_terms("learnability", lrn, ref)
    A = dense_score_matrix(terms)
    s = independent_scores("sigmoid", terms, n_keep=5, block_elems=7)
    off = A.sum(1) + A.sum(0) - 2 * A.diagonal()
    torch.testing.assert_close(s, A.diagonal() + off * 4 / 14)


def test_joint_softmax_selection_is_valid(gen):
    sel = select("jest", embeds(48, 6, 0), embeds(48, 6, 1), 16, 4, gen(0), loss="softmax")
    assert len(set(sel.indices.tolist())) == 16


def test_score_needs_reference():
    with pytest.raises(ValueError, match="needs embeddings"):
        score_terms("learnability", embeds(4, 2, 0), None)
    with pytest.raises(ValueError, match="not divisible"):
        sample_chunks(IndependentScorer(torch.zeros(10)), 5, 2, torch.Generator())
