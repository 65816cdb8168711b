"""The tree says what it holds: helpers/ is the transformer, helpers/course/ the machinery, grader/ the grader.

The model layer (helpers/*.py) imports only the standard library, torch and itself. Nothing outside tests/ and
grader/ imports the grader but the Makefile (make check ...) and the site, which publishes the exercise notebooks
through the workspace (grader.workspace).
"""

import ast
import sys
from pathlib import Path

from helpers.course.utils import PROJECT_ROOT

THIRD_PARTY_ALLOWED_IN_MODEL = {"torch"}


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def model_layer_violations(root: Path) -> list[str]:
    """Imports of helpers/*.py that leave the model layer: machinery, grader, or a third-party package but torch."""
    bad = []
    for path in sorted((root / "helpers").glob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            inside = top == "helpers" and not name.startswith("helpers.course")
            if inside or top in THIRD_PARTY_ALLOWED_IN_MODEL or top in sys.stdlib_module_names or top == "__future__":
                continue
            bad.append(f"{path.relative_to(root)} imports {name}")
    return sorted(set(bad))


def grader_importers(root: Path) -> list[str]:
    """Python files and notebooks outside tests/ and grader/ that import the grader."""
    bad = []
    for path in sorted(root.rglob("*.py")) + sorted(root.glob("notebooks/*.ipynb")):
        rel = path.relative_to(root)
        if rel.parts[0] in {"tests", "grader", ".venv", "build", "exercises"} or rel.parts[0].startswith("."):
            continue
        text = path.read_text()
        if path.suffix == ".py":
            hits = [n for n in imported_modules(path) if n.split(".")[0] == "grader"]
            if rel.parts[0] == "website":
                hits = [n for n in hits if n not in {"grader", "grader.workspace"}]
        else:
            hits = [line for line in text.splitlines() if "from grader" in line or "import grader" in line]
        if hits:
            bad.append(f"{rel} imports the grader")
    return bad


def test_the_model_layer_imports_only_torch_the_standard_library_and_itself():
    assert model_layer_violations(PROJECT_ROOT) == []


def test_only_the_tests_the_makefile_and_the_site_use_the_grader():
    assert grader_importers(PROJECT_ROOT) == []
    assert "grader.workspace" in (PROJECT_ROOT / "Makefile").read_text()


def test_helpers_lists_the_transformer_and_the_machinery_package_only():
    names = sorted(p.name for p in (PROJECT_ROOT / "helpers").iterdir() if p.name != "__pycache__")
    assert "course" in names
    assert not [n for n in names if n.startswith(("checks", "grading", "workspace"))]


def test_a_planted_wrong_import_is_caught(tmp_path):
    (tmp_path / "helpers" / "course").mkdir(parents=True)
    (tmp_path / "helpers" / "attention.py").write_text(
        "import torch\nfrom helpers.course.plotting import save_figure\n"
    )
    (tmp_path / "helpers" / "layers.py").write_text("def f():\n    import numpy as np\n    return np\n")
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "07_generation.py").write_text("from grader.checks.models import TinyDecoder\n")
    assert model_layer_violations(tmp_path) == [
        "helpers/attention.py imports helpers.course.plotting",
        "helpers/attention.py imports helpers.course.plotting.save_figure",
        "helpers/layers.py imports numpy",
    ]
    assert grader_importers(tmp_path) == ["solutions/07_generation.py imports the grader"]


def long_functions(root: Path, limit: int = 40) -> list[str]:
    """Functions of the model layer longer than `limit` lines (signature and docstring included)."""
    found = []
    for path in sorted((root / "helpers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= limit:
                found.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return found


def test_every_function_of_the_model_layer_reads_in_one_screen():
    assert long_functions(PROJECT_ROOT) == []


def test_a_planted_long_function_is_caught(tmp_path):
    (tmp_path / "helpers").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(40))
    (tmp_path / "helpers" / "models.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}")
    assert long_functions(tmp_path) == ["models.py:5 long (41 lines)"]
