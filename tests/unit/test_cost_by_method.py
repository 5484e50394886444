"""Every method is charged for exactly the models and passes it uses (the registry drives the cost
model), and the uniform baseline at equal FLOPs matches the method that was run, the same in the
pipeline and the benchmark."""

import json
import math

from cli import smoke_args
from jestflow import config as C
from jestflow.cli import main
from jestflow.core import flops
from jestflow.methods import METHODS


def test_registry_drives_what_each_method_uses():
    cfg = C.load_config("smoke")
    n, b, d = 160, 32, cfg.model.embed_dim
    fwd = flops.forward_per_example(cfg.model)
    expect = {  # (scoring forwards, models in the score matrix, pairs per candidate, charged the reference)
        "uniform": (0, 0, 0, False),
        "oracle": (0, 0, 0, False),
        "offline-easy-reference": (0, 0, 0, True),
        "jest": (n, 2, b, True),
        "independent": (n, 2, n, True),
        "hard-learner": (n, 1, b, False),
        "easy-reference": (0, 1, b, True),
    }
    for name, (scored, models, pairs, charged) in expect.items():
        c = cfg.with_method(name)
        cost = flops.step_cost(c)
        assert cost.scoring == scored * fwd, name
        assert cost.selection == models * 4.0 * (n if models else 0) * pairs * d, name
        assert cost.train == 3 * fwd * b, name
        assert bool(flops.fixed(METHODS[name], 1.0, 2.0)) is charged, name


def test_hard_learner_run_is_not_charged_the_reference(smoke_scored, tmp_path):
    out = tmp_path / "hard"
    scored = smoke_scored
    args = smoke_args(
        "train",
        "learner.steps=3",
        "learner.eval_every=0",
        method="hard-learner",
        data=scored / "data" / "pool",
        scores=scored / "scores",
        out=out,
    )
    assert main(args) == 0
    s = json.loads((out / "train.json").read_text())
    cfg = C.load_config("smoke").with_method("hard-learner")
    assert "reference_flops" not in s and "reference_scoring_flops" not in s
    assert s["flops"]["selection"] == 3 * flops.selection(160, 32, cfg.model.embed_dim, 1)
    assert flops.run_total(s) == s["flops_total"]


def test_uniform_at_equal_flops_matches_the_method_that_was_run():
    cfg = C.load_config("smoke")
    index = {"reference_flops": 5e12, "scoring_flops": 1e12}
    steps = {m: flops.matched_uniform_steps(cfg.with_method(m), index) for m in ("jest", "flexi-jest", "hard-learner")}
    uniform_step = flops.step_cost(cfg.with_method("uniform")).total
    for m, n in steps.items():
        c = cfg.with_method(m)
        total = c.learner.steps * flops.step_cost(c).total + sum(flops.fixed(METHODS[m], 5e12, 1e12).values())
        assert (n - 1) * uniform_step < total <= n * uniform_step, m
    assert steps["flexi-jest"] < steps["jest"] and steps["hard-learner"] < steps["jest"]
    # activation reuse makes the matched run cheaper, so the baseline gets fewer steps
    assert flops.matched_uniform_steps(cfg.with_method("jest"), index, reuse=True) < steps["jest"]


def test_pipeline_and_benchmark_match_compute_the_same_way():
    """The pipeline's uniform@flops and the benchmark's runs at JEST's total compute come from one cost
    model (flops.run_cost / steps_at_total): the same steps for the same budget."""
    from jestflow.bench.curation import jest_total, steps_at

    cfg = C.load_config("smoke")
    index = {"reference_flops": 5e12, "scoring_flops": 1e12}
    matched = flops.matched_uniform(cfg, "jest", index)
    assert matched.learner.steps == steps_at(cfg, "uniform", jest_total(cfg, index), index) > cfg.learner.steps
    points = math.ceil(cfg.learner.steps / cfg.learner.eval_every)  # as many curve points as the matched run
    assert math.ceil(matched.learner.steps / matched.learner.eval_every) == points
