"""The softmax (CLIP) scores of joint and independent selection against the true per-example
cross-entropies, computed by brute force in float64 (a candidate already in the chosen set is scored
once, not twice)."""

import pytest
import torch
import torch.nn.functional as F

from jestflow.core import losses
from jestflow.core.selection import Embeds, SoftmaxScorer, independent_scores, score_terms, select


def embeds(n, d, seed, log_t=1.0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return Embeds(img, txt, torch.tensor(log_t, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))


def cross_entropy_in_batch(e: Embeds, batch: list[int]) -> torch.Tensor:
    """Each member's (i2t + t2i) / 2 cross-entropy within `batch`: the true per-example CLIP loss."""
    i2t, t2i = losses.softmax_per_example(e.img[batch], e.txt[batch], e.log_t)
    return (i2t + t2i) / 2


def test_softmax_score_of_a_chosen_example_is_its_cross_entropy():
    """For k ∈ S the positive pair is already inside the normaliser over S: adding it again scored a
    6-example case 1.45 against a true cross-entropy of 1.19."""
    lrn, ref = embeds(6, 4, 0, log_t=2.0), embeds(6, 4, 1, log_t=1.5)
    S = [0, 2, 3, 5]
    sc = SoftmaxScorer(score_terms("learnability", lrn, ref))
    sc.add(torch.tensor(S[:2])), sc.add(torch.tensor(S[2:]))
    want = cross_entropy_in_batch(lrn, S) - cross_entropy_in_batch(ref, S)
    torch.testing.assert_close(sc.logits()[S], want, rtol=1e-9, atol=1e-12)
    # hard-learner alone: the chosen members' scores are their true cross-entropies
    sc = SoftmaxScorer(score_terms("hard-learner", lrn, None))
    sc.add(torch.tensor(S))
    torch.testing.assert_close(sc.logits()[S], cross_entropy_in_batch(lrn, S), rtol=1e-9, atol=1e-12)


def test_independent_softmax_scores_are_cross_entropies_over_the_super_batch():
    lrn, ref = embeds(9, 5, 2), embeds(9, 5, 3)
    got = independent_scores("softmax", score_terms("learnability", lrn, ref), n_keep=3)
    everyone = list(range(9))
    torch.testing.assert_close(got, cross_entropy_in_batch(lrn, everyone) - cross_entropy_in_batch(ref, everyone))


def test_softmax_chosen_diag_diagnostic_is_the_chosen_examples_mean_cross_entropy():
    lrn, ref = embeds(16, 4, 4), embeds(16, 4, 5)
    sel = select("jest", lrn, ref, 8, 2, torch.Generator().manual_seed(0), loss="softmax")
    S = sel.indices.tolist()
    want = (cross_entropy_in_batch(lrn, S) - cross_entropy_in_batch(ref, S)).mean()
    assert sel.chosen_diag == pytest.approx(float(want), rel=1e-9)
