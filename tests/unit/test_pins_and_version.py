"""One home each: exact versions only in constraints.txt, the package version only in jestflow/__init__.py."""

import re
from pathlib import Path

import tomllib

import jestflow

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower()


def test_every_dependency_is_pinned_in_constraints_and_only_there():
    requirements = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    assert not [r for r in requirements if "==" in r], "exact pins belong in constraints.txt"
    pins = dict(
        line.split("#")[0].strip().lower().split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line.split("#")[0]
    )
    assert not [_name(r) for r in requirements if _name(r) not in pins], "unpinned dependencies"


def test_the_version_is_written_once():
    assert PROJECT["dynamic"] == ["version"] and "version" not in PROJECT
    text = (ROOT / "components" / "image.py").read_text()
    assert jestflow.__version__ not in text  # image.py imports it
