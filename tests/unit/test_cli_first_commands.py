"""What the first commands on a fresh machine say and do: the project venv, the announce line, help texts that
name what a newcomer needs (issue 16), options generated from the registry, the device export runs on."""

import os
import subprocess
from pathlib import Path

from cli import smoke_args
from jestflow.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_and_test_use_a_project_venv():
    """A stock Debian 12 / Ubuntu 24.04 python3 is externally managed (PEP 668): pip refuses to install
    into it. The two commands create .venv and install there; PYTHON= still overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV", "MAKEFLAGS")}
    for target in ("run", "test"):
        plan = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, env=env).stdout
        assert "python3 -m venv .venv" in plan, target
        assert ".venv/bin/python -m pip install" in plan and "python3 -m pip install" not in plan, target
    plan = subprocess.run(["make", "-n", "-B", "run"], cwd=ROOT, capture_output=True, text=True, env=env).stdout
    assert ".venv/bin/python -m jestflow run --preset demo" in plan
    plan = subprocess.run(
        ["make", "-n", "-B", "run", "PYTHON=/opt/py/bin/python3"], cwd=ROOT, capture_output=True, text=True, env=env
    ).stdout
    assert "-m venv" not in plan and "/opt/py/bin/python3 -m jestflow run" in plan


def test_commands_say_what_they_will_run(tmp_path, capsys):
    assert main(["data", "demo", *smoke_args("x", out=tmp_path / "d")[1:]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("jestflow data: preset smoke; demo data: curated 600, pool 1600, eval 200\n")
    assert main(["data", "demo", *smoke_args("x", "demo.seed=4", out=tmp_path / "d")[1:]]) == 0
    out = capsys.readouterr().out
    assert "jestflow data: preset smoke + 1 --set;" in out
    assert "already holds a demo dataset (preset smoke: curated 600, pool 1600, eval 200, seed 0; use --force" in out
    # --method becomes an override inside the CLI; the banner counts only what the user set (issue 27)
    main(["train", *smoke_args("x", method="jest", data=tmp_path / "none", out=tmp_path / "t")[1:]])
    assert capsys.readouterr().out.startswith("jestflow train: preset smoke; learner (jest)")


def test_help_says_what_newcomers_need():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices
    assert "zero-shot top-1" in sub["evaluate"].description
    assert "like-for-like" in sub["train"].format_help().replace("\n", " ").replace("  ", " ")
    assert "byte offset" in sub["data"]._subparsers._group_actions[0].choices["check"].description


def test_scores_help_names_every_method_that_reads_the_cache():
    """Was: a hand-written list (jest, independent, easy-reference) without flexi-jest and
    offline-easy-reference. Now written from the method registry."""
    from jestflow.methods import METHODS

    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices
    scores = next(a for a in sub["train"]._actions if a.dest == "scores")
    needs = [m.name for m in METHODS.values() if m.uses_reference]
    assert set(needs) >= {"flexi-jest", "offline-easy-reference", "jest"}
    assert f"needed by {', '.join(needs)}" in scores.help


def test_export_runs_on_the_configured_device(tmp_path, capsys):
    """Was: `jestflow export` never passed a device, so it scored the pool on CPU even on a GPU machine.
    Now it takes learner.device like training does: asking for CUDA where there is none is refused."""
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("needs a machine without CUDA")
    args = smoke_args("export", "learner.device=cuda", model=tmp_path, scores=tmp_path, pool=tmp_path, out=tmp_path)
    assert main(args) == 2
    assert "device=cuda asked for, but no CUDA device is available" in capsys.readouterr().err
