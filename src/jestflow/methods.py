"""The method registry: every data-selection method jestflow knows, and what each one uses.

Torch-free on purpose: the configuration validates against it, the CLI builds its choices and help
from it, the cost model charges by it, the pipeline and the benchmark pick their runs from it, and
none of them should pay torch's import to read a table. Adding a method touches this table and, if
it needs a new kind of score or sampler, `selection.select`.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORES = ("learnability", "hard-learner", "easy-reference")


@dataclass(frozen=True)
class Method:
    """One data-selection method: how it samples, what it scores and which models and passes it uses.

    Everything that needs to know about methods (config validation, the selector, the cost model, the
    pipeline's inputs, the CLI's choices, the benchmark's runs and labels) reads this table, so adding
    a method touches one place."""

    name: str
    sampler: str  # "joint" (Algorithm 1) | "independent" (per-example scores) | "uniform" (no super-batch)
    score: str | None = None  # one of SCORES for joint / independent sampling
    offline_filter: str | None = None  # uniform sampling from a pool filtered once: "reference-clip" | "clean"
    low_res_scoring: bool = False  # Flexi-JEST: score (and train half the batch) with a coarse image view
    benchmarked: bool = True  # one of `jestflow bench curation`'s methods
    label: str = ""  # what reports call it

    @property
    def online(self) -> bool:
        """Whether it draws a super-batch of N = b / (1 - f) and selects b of it every step."""
        return self.sampler != "uniform"

    @property
    def uses_learner(self) -> bool:
        """Whether the learner scores the super-batch with a forward pass every step."""
        return self.score in ("learnability", "hard-learner")

    @property
    def scores_with_reference(self) -> bool:
        """Whether the reference's cached embeddings enter the score matrix."""
        return self.score in ("learnability", "easy-reference")

    @property
    def uses_reference(self) -> bool:
        """Whether it reads the reference's score cache (and so is charged the reference's costs)."""
        return self.scores_with_reference or self.offline_filter == "reference-clip"


METHODS = {
    m.name: m
    for m in (
        Method("uniform", "uniform", label="uniform"),
        Method(
            "offline-easy-reference",
            "uniform",
            offline_filter="reference-clip",
            label="easy-reference (offline CLIP-score filter)",
        ),  # keep the pool's top fraction by reference CLIP score
        Method("independent", "independent", "learnability", label="independent learnability"),
        Method("jest", "joint", "learnability", label="JEST (joint learnability)"),
        Method("flexi-jest", "joint", "learnability", low_res_scoring=True, label="Flexi-JEST"),
        Method("oracle", "uniform", offline_filter="clean", label="oracle (clean only)"),  # the upper bound of curation
        Method("hard-learner", "joint", "hard-learner", benchmarked=False, label="hard learner (joint)"),
        Method("easy-reference", "joint", "easy-reference", benchmarked=False, label="easy reference (joint)"),
    )
}


def get_method(name: str) -> Method:
    """The registry entry of `name`, or a ValueError listing the known methods."""
    if name not in METHODS:
        raise ValueError(f"unknown selection method {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[name]


# The implementations of the sigmoid gains (`select.kernel`; selection.make_scorer).
KERNELS = ("auto", "fused", "torch")
