"""The cost model: FLOPs of every pass a method makes, per step and per run. The one home of these
formulas; training, the reports, the pipeline and the benchmarks all read them from here.

Units: a multiply-add is 2 FLOPs; a training step is 3 forwards (forward + backward ≈ 2 forwards).
Per learner step a method pays for
- scoring: the learner's forward over the super-batch of N = b / (1 - f) (methods that score with the
  learner; Flexi-JEST at its coarse view),
- selection: per model whose embeddings enter the score, two N x c block products per chunk,
  ``4·N·b·d`` over all chunks,
- training: 3 forwards of the b chosen examples (Flexi-JEST: half of them at the coarse view), less
  the linear layers that activation reuse replays instead of recomputing.
Methods that read the reference's score cache are also charged its fixed costs: the reference's
training and its one scoring pass over the pool (`fixed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..config import Config, ModelConfig
from ..methods import Method


def image_tokens(c: ModelConfig, patch_stride: int = 1) -> int:
    """Image tokens the tower attends over at an effective patch size of `patch_stride` x patch_size."""
    return ((c.image_size // c.patch_size) // patch_stride) ** 2


def linear_per_example(c: ModelConfig, patch_stride: int = 1, image: bool = True, text: bool = True) -> float:
    """Forward FLOPs of the towers' linear layers (qkv, proj, MLP: 24·w² per token and block; the
    heads): the part activation reuse replays instead of recomputing."""
    flops = 0
    t = image_tokens(c, patch_stride)
    if image:
        flops += c.depth * 24 * c.width**2 * t + (
            _map_head_linear(c, t) if c.arch == "hf-siglip" else 2 * c.width * c.embed_dim
        )
    if text:
        flops += c.text_depth * 24 * c.text_width**2 * c.context_length + 2 * c.text_width * c.embed_dim
    return float(flops)


def _map_head_linear(c: ModelConfig, tokens: int) -> float:
    """hf-siglip's image pooling (SiglipMultiheadAttentionPoolingHead): one probe query (2·w²), keys and
    values over every token (4·t·w²), the output projection (2·w²) and a 4x MLP on the probe (16·w²); no
    projection after it (the embedding is the tower's width)."""
    return 4 * tokens * c.width**2 + 20 * c.width**2


def forward_per_example(c: ModelConfig, patch_stride: int = 1) -> float:
    """Forward FLOPs for one image-caption pair: the linear layers, the attention core (4·t²·w per
    block) and the patch embedding (over the image downsampled by `patch_stride`; the downsampling and
    the position-embedding resize are a few FLOPs per pixel and not counted)."""
    t = image_tokens(c, patch_stride)
    embed = 2 * t * 3 * c.patch_size**2 * c.width
    attention = c.depth * 4 * t * t * c.width + c.text_depth * 4 * c.context_length**2 * c.text_width
    if c.arch == "hf-siglip":
        attention += 4 * t * c.width  # the pooling probe attends over the t tokens
    return linear_per_example(c, patch_stride) + float(attention + embed)


def selection(n: int, b: int, d: int, n_models: int) -> float:
    """Chunked selection: per model two N x c block products per chunk; over all chunks 2 * 2*N*b*d."""
    return n_models * 4.0 * n * b * d


def score_models(m: Method) -> int:
    """How many models' embeddings enter the method's score matrix (0 without online selection)."""
    if not m.online:
        return 0
    return int(m.uses_learner) + int(m.scores_with_reference)


def train_groups(b: int, coarse_stride: int) -> list[tuple[slice, int]]:
    """The sub-batch's rows by patch stride: all at full resolution, or (Flexi-JEST, `coarse_stride`
    > 1) the first half at full resolution and the second at the coarse stride. The selector shuffles
    the chosen rows first, so each half is a random half (not the earliest-drawn chunks)."""
    if coarse_stride > 1:
        return [(slice(0, b // 2), 1), (slice(b // 2, b), coarse_stride)]
    return [(slice(0, b), 1)]


def train_step(c: ModelConfig, groups: list[tuple[slice, int]], replay_stride: int = 0) -> float:
    """FLOPs of a training step: 3x the forward of each group, less the linear layers a tape replays
    (the text always, the image where its view is the one scored, `replay_stride`; 0 = no replay)."""
    total = 0.0
    for rows, stride in groups:
        n = rows.stop - rows.start
        saved = linear_per_example(c, stride, image=stride == replay_stride) if replay_stride else 0.0
        total += n * (3 * forward_per_example(c, stride) - saved)
    return total


def scoring_stride(cfg: Config) -> int:
    """The image view the learner scores the super-batch with (and Flexi-JEST trains half the batch at)."""
    return cfg.select.flexi_stride if cfg.select.method_info.low_res_scoring else 1


@dataclass(frozen=True)
class StepCost:
    """FLOPs of one step, by pass."""

    scoring: float = 0.0
    selection: float = 0.0
    train: float = 0.0

    @property
    def total(self) -> float:
        return self.scoring + self.selection + self.train

    def as_dict(self) -> dict[str, float]:
        return {"scoring": self.scoring, "selection": self.selection, "train": self.train}


def step_cost(cfg: Config, stage: str = "learner", reuse: bool = False) -> StepCost:
    """One step of `stage` ("reference": plain training on its batch; "learner": cfg's method)."""
    if stage == "reference":
        return StepCost(train=train_step(cfg.model, train_groups(cfg.reference.batch_size, 1)))
    m, b, n = cfg.select.method_info, cfg.learner.batch_size, cfg.super_batch_size()
    stride = scoring_stride(cfg)
    # independent selection scores each candidate against the whole super-batch once (N x N blocks)
    paired = n if m.sampler == "independent" else b
    return StepCost(
        scoring=forward_per_example(cfg.model, stride) * n if m.uses_learner else 0.0,
        selection=selection(n, paired, cfg.model.embed_dim, score_models(m)),
        train=train_step(cfg.model, train_groups(b, stride), stride if reuse else 0),
    )


def fixed(m: Method, reference_flops: float, reference_scoring_flops: float) -> dict[str, float]:
    """The fixed costs a learner of method `m` is charged: the reference's training and its pass over
    the pool, for methods that read the reference's scores; nothing for the others."""
    if not m.uses_reference:
        return {}
    return {"reference_flops": reference_flops, "reference_scoring_flops": reference_scoring_flops}


def fixed_total(summary: dict) -> float:
    """A run summary's fixed costs (what `fixed` charged it)."""
    return summary.get("reference_flops", 0.0) + summary.get("reference_scoring_flops", 0.0)


def run_total(summary: dict) -> float:
    """All compute behind a learner run: its scoring, selection and training, plus its fixed costs."""
    return summary["flops_total"] + fixed_total(summary)


def run_cost(cfg: Config, score_index: dict, reuse: bool = False) -> float:
    """Total FLOPs of a run of cfg's learner: its steps at its per-step cost (with activation reuse if it
    uses it) plus the fixed costs its method is charged (`score_index` is the score cache's index.json,
    which records the reference's costs)."""
    m = cfg.select.method_info
    charged = fixed(m, score_index.get("reference_flops", 0.0), score_index.get("scoring_flops", 0.0))
    return cfg.learner.steps * step_cost(cfg, reuse=reuse).total + sum(charged.values())


def steps_at_total(cfg: Config, total: float, score_index: dict, reuse: bool = False) -> int:
    """How many steps of cfg's learner make a run of `total` FLOPs, its fixed costs included (at least 1)."""
    m = cfg.select.method_info
    charged = fixed(m, score_index.get("reference_flops", 0.0), score_index.get("scoring_flops", 0.0))
    return max(1, math.ceil((total - sum(charged.values())) / step_cost(cfg, reuse=reuse).total))


def matched_uniform_steps(cfg: Config, score_index: dict, reuse: bool = False) -> int:
    """Uniform steps whose total FLOPs equal a run of cfg's method (`run_cost`)."""
    return steps_at_total(cfg.with_method("uniform"), run_cost(cfg, score_index, reuse), score_index)


def matched_eval_every(cfg: Config, steps: int) -> int:
    """Evaluation cadence of a run of `steps` matched to cfg's learner: the same number of curve
    points (10 when cfg's learner does not evaluate)."""
    t = cfg.learner
    points = math.ceil(t.steps / t.eval_every) if t.eval_every else 10
    return max(1, math.ceil(steps / points))


def matched_uniform(cfg: Config, method: str, score_index: dict, reuse: bool = False) -> Config:
    """The uniform baseline at equal total compute: cfg's learner trained uniformly for as many steps as
    a run of `method` costs (`matched_uniform_steps`), with as many evaluation points."""
    matched = cfg.with_method(method)
    steps = matched_uniform_steps(matched, score_index, reuse)
    learner = replace(cfg.learner, steps=steps, eval_every=matched_eval_every(matched, steps))
    return replace(cfg.with_method("uniform"), learner=learner).validate()


def payoff(uniform_flops: float, method_flops: float, fixed_flops: float) -> dict:
    """Whether curation's fixed cost pays, from the learner FLOPs uniform (U) and the method (M) spend to
    reach the same target and the fixed cost F of the reference (its training and pool pass).

    With K learner runs sharing one reference, a run's total-compute speed-up is U / (M + F/K); with a
    learner budget scaled by λ at the same learner-only speed-up U/M, it is λU / (λM + F). The
    reference pays for itself (speed-up 1) after K* = F / (U − M) runs, or once the uniform run would
    spend U* = F·U / (U − M) FLOPs; never when M ≥ U."""
    gain = uniform_flops - method_flops
    pays = gain > 0 and method_flops > 0
    return {
        "uniform_flops": uniform_flops,
        "method_flops": method_flops,
        "learner_speedup": uniform_flops / method_flops if method_flops > 0 else None,
        "total_speedup": uniform_flops / (method_flops + fixed_flops) if method_flops + fixed_flops > 0 else None,
        "fixed_flops": fixed_flops,
        "break_even_runs": math.ceil(fixed_flops / gain) if pays else None,
        "break_even_uniform_flops": fixed_flops * uniform_flops / gain if pays else None,
    }


def break_even_words(runs: int | None) -> str:
    """What `payoff(...)["break_even_runs"]` means, as the predicate of "the reference ..."."""
    if not runs:
        return "never pays for itself"
    if runs == 1:
        return "pays for itself within a single run"
    return f"pays for itself once {runs} learner runs share it"


def payoff_curve(uniform_flops: float, method_flops: float, fixed_flops: float, shares: list[float]) -> list[float]:
    """Total-compute speed-up when the reference's fixed cost is shared by each of `shares` learner runs
    (equivalently: learner budgets `shares` times this run's, at the same learner-only speed-up)."""
    return [uniform_flops / (method_flops + fixed_flops / k) for k in shares]
