"""Command lines for tests: `jestflow` in a subprocess, and the smoke chain's usual arguments."""

import subprocess
import sys


def run_jestflow(*args, timeout: float = 900, env=None) -> subprocess.CompletedProcess:
    """`python -m jestflow ARGS` in a subprocess (text output captured)."""
    cmd = [sys.executable, "-m", "jestflow", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def smoke_args(command: str, *sets: str, **options) -> list[str]:
    """`command` with --option value pairs (underscores become dashes), `--set` for each of `sets`, on the
    smoke preset, quiet: smoke_args("train", "learner.steps=3", method="jest", data=pool, out=out)."""
    args = [command]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    for s in sets:
        args += ["--set", s]
    return [*args, "--preset", "smoke", "--quiet"]
