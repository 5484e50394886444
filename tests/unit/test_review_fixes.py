"""Regression tests for the bugs a careful read of the code found (issue 13); each failed before its fix."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from cli import smoke_args
from jestflow import config as C
from jestflow import stages
from jestflow.cli import main
from jestflow.core import flops, losses
from jestflow.core.selection import Embeds, SoftmaxScorer, independent_scores, score_terms, select
from jestflow.methods import METHODS


def embeds(n, d, seed, log_t=1.0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return Embeds(img, txt, torch.tensor(log_t, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))


def cross_entropy_in_batch(e: Embeds, batch: list[int]) -> torch.Tensor:
    """Each member's (i2t + t2i) / 2 cross-entropy within `batch`: the true per-example CLIP loss."""
    i2t, t2i = losses.softmax_per_example(e.img[batch], e.txt[batch], e.log_t)
    return (i2t + t2i) / 2


# --- 1. --config FILE reaches `jestflow run` and `jestflow bench curation` ----------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["run", "--out", "{tmp}/run", "--data", "{tmp}/data"], id="run"),
        pytest.param(["bench", "curation", "--out", "{tmp}/bench"], id="bench-curation"),
    ],
)
def test_config_file_is_read_by_run_and_bench(tmp_path, command):
    """A bad value in the file must stop the command at once (it was ignored, and the run went ahead)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner:\n  steps: -3\n")
    args = [a.format(tmp=tmp_path) for a in command]
    r = subprocess.run(
        [sys.executable, "-m", "jestflow", *args, "--preset", "smoke", "--config", str(bad), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip() == "jestflow: error: learner.steps=-3 must be positive"


def test_config_file_travels_as_overrides(tmp_path):
    """What `run` hands the pipeline and `bench` hands its workers resolves to what --config gives."""
    f = tmp_path / "c.yaml"
    f.write_text("model: {size: small, width: 96}\nlearner: {steps: 7, compile: off}\nselect: {method: flexi-jest}\n")
    direct = C.load_config("smoke", str(f), ["learner.steps=9"])
    via = C.load_config("smoke", None, [*C.file_overrides(str(f)), "learner.steps=9"])
    assert via == direct
    assert (direct.model.size, direct.model.width, direct.model.depth) == ("small", 96, 6)
    assert (direct.learner.steps, direct.learner.compile, direct.select.method) == (9, "off", "flexi-jest")


# --- 2. softmax scores of candidates already in the chosen set -----------------------------------------


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


# --- 3 and 4. values that crashed later (checkpoint_every=0, patch_size=0, embed_dim=0, ...) are refused
# when the configuration is read: cases in test_config.py's table of rejected configurations.


# --- 5. every method is charged for exactly the models and passes it uses --------------------------------


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


def test_pipeline_and_benchmark_build_the_same_flops_matched_baseline(smoke_scored):
    """One function makes the baseline for both; same steps and the same evaluation cadence."""
    from jestflow.bench.curation import plan

    cfg = C.load_config("smoke")
    matched = stages.flops_matched(cfg, "jest", str(smoke_scored / "scores"))
    job = next(j for j in plan(cfg, 1, False, matched) if j.name == "uniform@flops-s0")
    assert job.overrides == (
        f"learner.steps={matched.learner.steps}",
        f"learner.eval_every={matched.learner.eval_every}",
    )
    assert matched.select.method == "uniform" and matched.learner.steps > cfg.learner.steps
    points = math.ceil(cfg.learner.steps / cfg.learner.eval_every)  # as many curve points as the matched run
    assert math.ceil(matched.learner.steps / matched.learner.eval_every) == points
