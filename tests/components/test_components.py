"""Components stay thin wrappers over jestflow, and the pipeline compiles without torch."""

import ast
import sys
from pathlib import Path

import pytest

import jestflow
from jestflow_components import image

ROOT = Path(__file__).resolve().parents[2]
COMPONENT_DIRS = sorted(p for p in (ROOT / "components").iterdir() if (p / "component.py").exists())
STDLIB = set(sys.stdlib_module_names)


def top_level_imports(path: Path) -> set:
    tree = ast.parse(path.read_text())
    names = set()
    top = lambda m: m if m.split(".")[0] == "jestflow" else m.split(".")[0]  # noqa: E731 (jestflow's in full)
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {top(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(top(node.module))
    return names


def test_expected_components_exist():
    assert {p.name for p in COMPONENT_DIRS} == {
        "prepare",
        "train_reference",
        "score",
        "merge_scores",
        "train_learner",
        "multinode",
        "evaluate",
        "report",
    }


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "components").rglob("*.py")) + sorted((ROOT / "pipelines").glob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_import_guard_stdlib_and_kfp_only(path):
    """`jestflow` itself is allowed for its version (its __init__ imports nothing); its modules are not."""
    allowed = STDLIB | {"kfp", "jestflow_components", "jestflow_pipelines", "__future__", "jestflow"}
    assert top_level_imports(path) <= allowed


@pytest.mark.parametrize("folder", COMPONENT_DIRS, ids=lambda p: p.name)
def test_component_body_only_imports_jestflow_and_calls_it(folder):
    tree = ast.parse((folder / "component.py").read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert len(funcs) == 1
    body = [n for n in funcs[0].body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert isinstance(body[0], ast.ImportFrom) and body[0].module == "jestflow.platform"
    assert len(body) == 2, "a component body is one import and one call into jestflow"
    call = body[1].value if isinstance(body[1], (ast.Expr, ast.Return)) else None
    assert isinstance(call, ast.Call) and ast.unparse(call.func).startswith("kfp_steps.")


@pytest.mark.parametrize("folder", COMPONENT_DIRS, ids=lambda p: p.name)
def test_component_has_readme_of_inputs_and_outputs(folder):
    text = (folder / "README.md").read_text()
    assert "## Inputs" in text and "## Outputs" in text


def test_image_names_are_defined_once_and_versioned():
    assert image.VERSION == jestflow.__version__
    assert image.CPU_IMAGE.endswith(":" + jestflow.__version__) and image.GPU_IMAGE.endswith(":" + jestflow.__version__)
    import subprocess

    # the repository's own Python files (git's list: not the venv's packages, which may name ghcr.io too)
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    hits = [
        p
        for p in (ROOT / f for f in files.stdout.split())
        if "ghcr.io/" in p.read_text() and p.name != "image.py" and "tests" not in p.parts
    ]
    assert hits == []


def test_pipeline_compiles_without_torch(tmp_path):
    """Compile in a subprocess where importing torch (or jestflow's heavy modules) fails."""
    import subprocess

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'numpy', 'PIL') or name.startswith('jestflow.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from jestflow_pipelines.compile import compile_all\n"
        f"compile_all({str(tmp_path)!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "jest_pipeline.yaml").exists()
