"""run_all.py: selection, parameter injection, failure reporting and write-back cleaning."""
import subprocess
import sys

import nbformat
import pytest

import run_all
from helpers.utils import PROJECT_ROOT


def make_notebook(path, *sources, parameters="mode = 'full'  # run mode"):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# Title of {path.stem}"))
    nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(s) for s in sources)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def course(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    make_notebook(nbs / "01_good.ipynb", "print('mode is', mode)")
    make_notebook(nbs / "02_bad.ipynb", "x = 1", "raise ValueError('boom in cell three')")
    make_notebook(nbs / "03_after.ipynb", "print('ran after')")
    return tmp_path


def run(course, *args):
    cmd = [sys.executable, str(PROJECT_ROOT / "run_all.py"), "--notebooks-dir", str(course / "notebooks"),
           "--build-dir", str(course / "build"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=course)


def test_selection_by_number_name_and_from(course):
    nbs = run_all.discover(course / "notebooks")
    assert [p.stem for p in nbs] == ["01_good", "02_bad", "03_after"]
    assert [p.stem for p in run_all.select(nbs, ["3"], None)] == ["03_after"]
    assert [p.stem for p in run_all.select(nbs, ["01_good", "02"], None)] == ["01_good", "02_bad"]
    assert [p.stem for p in run_all.select(nbs, None, "02")] == ["02_bad", "03_after"]
    with pytest.raises(SystemExit, match="no notebook matches 7"):
        run_all.select(nbs, ["7"], None)


def test_list_shows_titles(course):
    res = run(course, "--list")
    assert res.returncode == 0
    assert "01_good.ipynb" in res.stdout and "Title of 03_after" in res.stdout


def test_failing_notebook_is_named_with_cell_and_error_and_stops_the_run(course):
    res = run(course, "--quick")
    assert res.returncode == 1
    assert "FAILED: " in res.stderr and "02_bad.ipynb" in res.stderr
    assert "ValueError: boom in cell three" in res.stderr
    assert "cell: index" in res.stderr
    partial = course / "build" / "quick" / "executed" / "02_bad.ipynb"
    assert partial.exists() and "partially executed copy" in res.stderr
    assert not (course / "build" / "quick" / "executed" / "03_after.ipynb").exists()
    good = nbformat.read(course / "build" / "quick" / "executed" / "01_good.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in good.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "mode is quick" in printed
    assert (course / "build" / "quick" / "html" / "index.html").exists()


def test_keep_going_runs_later_notebooks(course):
    res = run(course, "--quick", "--keep-going", "--no-html")
    assert res.returncode == 1
    assert (course / "build" / "quick" / "executed" / "03_after.ipynb").exists()
    assert "2/3 notebooks ran" in res.stdout


def test_clean_for_commit_drops_run_metadata():
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": "/abs/path"}
    nb.cells = [nbformat.v4.new_code_cell("x", metadata={"papermill": {"duration": 1.0}, "execution": {"iopub.status.idle": "2026-01-01"}}),
                nbformat.v4.new_code_cell("mode = 'quick'", metadata={"tags": ["injected-parameters"]})]
    cleaned = run_all.clean_for_commit(nb)
    assert "papermill" not in cleaned.metadata and len(cleaned.cells) == 1
    assert cleaned.cells[0].metadata == {}
