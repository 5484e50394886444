"""Intervals for the curation benchmark, and its budget-ladder reading of speed-ups.

Every comparison is between means over seeds of retrieval R@1 on one held-out split. Their uncertainty
has two sources: the seeds (each learner's initialisation and data order) and the queries (the split is
a sample of what a model could be asked). A bootstrap replicate resamples both, paired: one draw of
seeds for every method (seed s of every method shares its data order) and one draw of queries for every
run (all runs answered the same queries). A statistic's 95% interval is the 2.5th to 97.5th percentile
of its replicates.

Budget ladder (how the paper measures a speed-up): uniform is trained at several budgets, each a
complete run with its own schedule. The budget uniform needs to match a score is read between those
runs, linearly in log budget; above the ladder's top it is only known to be larger ("> 8x"), below its
bottom only to be smaller ("< 0.5x"). Infinite values stand for those open ends here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..training.evaluation import unpack_hits


@dataclass
class Hits:
    """One run's answers at its last evaluation: did each image (i2t) and caption (t2i) query find its pair."""

    i2t: np.ndarray
    t2i: np.ndarray

    @classmethod
    def of(cls, summary: dict) -> Hits:
        last = summary["curve"][-1]
        n = last["n"]
        return cls(unpack_hits(last["query_hits"]["i2t"], n), unpack_hits(last["query_hits"]["t2i"], n))

    @property
    def r1(self) -> float:
        return float((self.i2t.mean() + self.t2i.mean()) / 2)


class Bootstrap:
    """Paired replicates over seeds and queries. `weights` counts how often each query is drawn in each
    replicate; `seeds` which seeds each replicate draws. Both are drawn once and shared by every run."""

    def __init__(self, n_queries: int, n_seeds: int, replicates: int = 2000, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n_queries, self.n_seeds, self.replicates = n_queries, n_seeds, replicates
        draws = rng.integers(0, n_queries, (replicates, n_queries))
        self.weights = np.stack([np.bincount(d, minlength=n_queries) for d in draws]).astype(np.float64)
        self.seeds = rng.integers(0, n_seeds, (replicates, n_seeds))

    def r1(self, hits: Hits) -> np.ndarray:
        """The run's R@1 in every replicate's query draw."""
        hit_counts = self.weights @ hits.i2t.astype(np.float64) + self.weights @ hits.t2i.astype(np.float64)
        return hit_counts / (2 * self.n_queries)  # whole counts: exact in float64

    def seed_mean(self, per_seed: list[np.ndarray]) -> np.ndarray:
        """Mean over each replicate's seed draw of per-seed replicate values (a list over seeds 0..S-1)."""
        stacked = np.stack(per_seed)  # S x R
        return stacked[self.seeds.T, np.arange(self.replicates)].mean(0)

    def query_se(self, hits: Hits) -> float:
        """Standard error of the run's R@1 over queries alone (the spread of its replicates)."""
        return float(self.r1(hits).std(ddof=1))


def interval(point: float, replicates: np.ndarray) -> dict:
    """A statistic with its 95% percentile interval. ±inf replicates (open ends of a ladder) are kept:
    an infinite bound says the data cannot bound it (percentiles of the replicates as drawn, no
    interpolation, so infinities stay infinities)."""
    if not len(replicates) or np.isnan(replicates).any():
        return {"value": float(point), "low": math.nan, "high": math.nan}
    lo, hi = np.percentile(replicates, [2.5, 97.5], method="inverted_cdf")
    return {"value": float(point), "low": float(lo), "high": float(hi)}


def budget_to_match(budgets: list[float], scores: list[float], target: float) -> float:
    """The budget uniform needs to reach `target`: the smallest ladder budget whose score reaches it,
    interpolated linearly in log budget from the rung before; -inf if the smallest rung already does
    (known only to be below it), +inf if none does (known only to be above the top)."""
    order = np.argsort(budgets)
    b, s = np.asarray(budgets, float)[order], np.asarray(scores, float)[order]
    reached = np.flatnonzero(s >= target)
    if not len(reached):
        return math.inf
    i = int(reached[0])
    if i == 0:
        return -math.inf
    frac = (target - s[i - 1]) / (s[i] - s[i - 1])
    return float(np.exp(np.log(b[i - 1]) + frac * (np.log(b[i]) - np.log(b[i - 1]))))


def score_at(budgets: list[float], scores: list[float], budget: float) -> float:
    """Uniform's score at `budget`, interpolated linearly in log budget between complete runs (NaN outside
    the ladder: nothing was measured there)."""
    order = np.argsort(budgets)
    b, s = np.log(np.asarray(budgets, float)[order]), np.asarray(scores, float)[order]
    x = math.log(budget)
    if x < b[0] - 1e-9 or x > b[-1] + 1e-9:
        return math.nan
    return float(np.interp(x, b, s))


def open_ended(value: float, budgets: list[float]) -> tuple[float, str]:
    """(finite value, prefix): a ±inf ladder reading as the ladder's end with '>' or '<'."""
    if value == math.inf:
        return max(budgets), "> "
    if value == -math.inf:
        return min(budgets), "< "
    return value, ""


def verdict(diff: dict, what: str = "beats") -> str:
    """From a difference's interval (A − B): A 'beats' B, 'loses to' it, or 'ties' (the interval holds 0);
    'cannot be compared with' where nothing was measured (B outside uniform's ladder)."""
    if math.isnan(diff["value"]):
        return "cannot be compared with"
    if diff["low"] > 0:
        return what
    if diff["high"] < 0:
        return "loses to"
    return "ties"


def replicate(fn: Callable[[int | None], float], replicates: int) -> tuple[float, np.ndarray]:
    """`fn(None)` on the full data and `fn(r)` on each replicate r."""
    return fn(None), np.array([fn(r) for r in range(replicates)])
