"""The package's layers import only downward, as each package's docstring says (README, "Layout").

Every import counts, also those inside functions: a lazy import upward is still a dependency upward."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "jestflow"

# floor -> the parts of jestflow on it; a module may import its own part and any part on a lower floor
FLOORS = [
    {"jestflow", "jestflow.methods", "jestflow.progress", "jestflow.storage"},  # foundation
    {"jestflow.config"},
    {"jestflow.core"},
    {"jestflow.model", "jestflow.data"},
    {"jestflow.training"},
    {"jestflow.stages"},
    {"jestflow.reporting"},
    {"jestflow.platform", "jestflow.bench"},
    {"jestflow.cli"},
    {"jestflow.__main__"},
]
FLOOR = {part: i for i, parts in enumerate(FLOORS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The layer part a module belongs to: its package under jestflow, or the top-level module itself."""
    bits = module.split(".")
    return ".".join(bits[:2]) if len(bits) > 1 else module


def imports_of(path: Path) -> set[str]:
    """Every jestflow module `path` imports, relative imports resolved."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "jestflow"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "jestflow":
                continue
            # `from . import x` names modules: count each
            out |= {f"{target}.{a.name}" if (PACKAGE / Path(*f"{target}.{a.name}".split(".")[1:])).exists()
                    or (PACKAGE / Path(*f"{target}.{a.name}".split(".")[1:])).with_suffix(".py").exists()
                    else target for a in node.names}  # fmt: skip
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_on_a_floor():
    assert not [m for m in map(module_name, MODULES) if part_of(m) not in FLOOR]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_go_only_downward(path):
    me = part_of(module_name(path))
    upward = sorted(
        f"{t} (floor {FLOOR[part_of(t)]})"
        for t in imports_of(path)
        if part_of(t) != me and part_of(t) != "jestflow" and FLOOR[part_of(t)] >= FLOOR[me]
    )
    assert not upward, f"{module_name(path)} (floor {FLOOR[me]}) imports {upward}"


def test_each_layer_says_its_job_and_what_it_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if init.parent.name == "storage":
            assert "Local paths" in doc, init
            continue
        assert "May import" in doc or init.parent.name == "bench", init
