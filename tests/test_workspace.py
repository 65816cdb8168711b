"""The exercise workspace: made from the reference solutions, graded headless, never overwriting the learner's work."""

import json
import re

import pytest

from grader import workspace as ws
from grader.core import load_checks

# Solution files with no teaching notebook of their own: the capstone gathers notebooks 01-07.
NO_TEACHING_NOTEBOOK = {"12_build_your_gpt"}


@pytest.fixture(scope="module")
def sources():
    return ws.sources()


@pytest.fixture
def workspace(tmp_path):
    """A fresh exercise workspace in a temporary folder."""
    ws.create(tmp_path, out=lambda *_: None)
    return tmp_path


@pytest.fixture(scope="module")
def untouched_grades(tmp_path_factory):
    """The grades of a fresh, untouched workspace (graded once: each notebook in its own process)."""
    path = tmp_path_factory.mktemp("untouched")
    ws.create(path, out=lambda *_: None)
    return ws.check_workspace(path)


def _region_lines(cell):
    """The solution lines of an exercise cell (between the markers)."""
    lines, inside = [], False
    for line in cell.source.splitlines():
        if ws._SOLUTION.match(line):
            inside = True
        elif ws._END.match(line):
            inside = False
        elif inside:
            lines.append(line)
    return lines


def test_every_check_has_one_solution_and_every_solution_a_check(sources):
    ids = [ex_id for src in sources for ex_id in src.exercises]
    assert len(ids) == len(set(ids)), "an exercise id appears twice in solutions/"
    assert sorted(ids) == sorted(load_checks()), "solutions/ and the registered checks disagree"
    notebooks = {p.stem for p in ws.PROJECT_ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")}
    for src in sources:
        assert src.name in notebooks | NO_TEACHING_NOTEBOOK, f"{src.path.name} is not named after a teaching notebook"
        for cell in src.cells:
            if cell.kind == "exercise":
                assert cell.exercise.startswith(src.number + ".")
                function = load_checks()[cell.exercise].function
                assert re.search(rf"^(def|class) {function}\b", cell.source, re.M), f"{cell.exercise}: no {function}"


def test_every_notebook_has_exercises(sources):
    assert [src.number for src in sources] == [f"{i:02d}" for i in range(1, 13)]


def test_workspace_is_generated_deterministically_and_holds_no_solution(sources, tmp_path):
    first = {src.name: ws.notebook_text(ws.exercise_notebook(src)) for src in sources}
    assert first == {src.name: ws.notebook_text(ws.exercise_notebook(src)) for src in sources}
    for src in sources:
        nb = json.loads(first[src.name])
        code = "\n".join(c["source"] for c in nb["cells"] if c["cell_type"] == "code")
        for cell in (c for c in src.cells if c.kind == "exercise"):
            hidden = [line.strip() for line in _region_lines(cell) if len(line.strip()) > 20]
            leaked = [line for line in hidden if line in code]
            assert not leaked, f"{cell.exercise}: solution lines in the workspace: {leaked[:2]}"
            assert f'check("{cell.exercise}", ' in code
        assert code.count("raise NotImplementedError(") >= len(src.exercises)
        assert nb["metadata"]["kernelspec"]["name"] == "transformers-course"


def test_reference_solutions_pass_every_check():
    graded = ws.check_solutions()
    failed = [g.report.text() for g in graded if not g.report.passed]
    assert not failed, "\n".join(failed)
    assert {g.report.exercise for g in graded} == set(load_checks())


def test_untouched_stubs_fail_with_their_hint(untouched_grades, sources):
    hints = {
        cell.exercise: ws._SOLUTION.match(next(line for line in cell.source.splitlines() if ws._SOLUTION.match(line)))[
            "hint"
        ]
        for src in sources
        for cell in src.cells
        if cell.kind == "exercise"
    }
    graded = untouched_grades
    assert {g.report.exercise for g in graded} == set(hints)
    for g in graded:
        first = g.report.cases[0]
        assert not g.report.passed
        assert first.detail == "not written yet", g.report.text()
        assert first.hint == hints[g.report.exercise]
        assert "not written yet" in g.report.text() and hints[g.report.exercise] in g.report.text()


def _edit_cell(path, exercise_id, source):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["metadata"].get("exercise") == exercise_id and "exercise" in cell["metadata"].get("tags", []):
            cell["source"] = source
    path.write_text(json.dumps(nb), encoding="utf-8")


def test_a_solved_exercise_passes_and_a_broken_cell_is_reported(workspace):
    path = workspace / "01_attention_by_hand.ipynb"
    _edit_cell(path, "01.all_queries", ws.solution_text("01.all_queries"))
    _edit_cell(path, "01.one_query", "def attend_one(query, keys, values)\n    return 1")
    graded = {g.report.exercise: g.report for g in ws.grade_notebook(path)}
    assert graded["01.all_queries"].passed
    assert not graded["01.one_query"].passed
    assert "SyntaxError" in graded["01.one_query"].cases[0].detail


def test_create_never_overwrites_and_reset_keeps_a_backup(workspace):
    path = workspace / "02_scaled_dot_product_attention.ipynb"
    path.write_text('{"my": "work"}', encoding="utf-8")
    said = []
    assert ws.create(workspace, out=said.append) == []
    assert path.read_text(encoding="utf-8") == '{"my": "work"}'
    assert any("02_scaled_dot_product_attention" in s and "changed" in s for s in said)
    ws.reset("2", workspace, out=said.append)
    backups = list((workspace / ws.BACKUP_DIR_NAME).glob("02_scaled_dot_product_attention.*.ipynb"))
    assert len(backups) == 1 and backups[0].read_text(encoding="utf-8") == '{"my": "work"}'
    assert json.loads(path.read_text(encoding="utf-8"))["metadata"]["course_exercises"]["source_digest"]


def test_solution_markers_are_checked(tmp_path):
    bad = tmp_path / "99_bad.py"
    bad.write_text("# %%\nimport torch\n\n# %% exercise 99.x\ndef f():\n    # SOLUTION hint: h\n    return 1\n")
    cell = ws.parse_source(bad).cells[1]
    with pytest.raises(ws.WorkspaceError, match="never closed"):
        ws.stub(cell)
    bad.write_text("import torch\n# %%\n")
    with pytest.raises(ws.WorkspaceError, match="before the first"):
        ws.parse_source(bad)


def test_command_line_errors_are_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "WORKSPACE_DIR", tmp_path / "missing")
    assert ws.main(["check"]) == 2
    assert "make exercises" in capsys.readouterr().err
    assert ws.main(["solution", "01.nope"]) == 2
    assert "no exercise '01.nope'" in capsys.readouterr().err
    assert ws.main(["reset", "42"]) == 2
    assert "no exercises for notebook '42'" in capsys.readouterr().err
    assert ws.main(["solution", "01.all_queries"]) == 0
    assert "def attention_by_hand" in capsys.readouterr().out


def test_scoreboard_lists_every_exercise(untouched_grades):
    board = ws.scoreboard(untouched_grades)
    assert board.splitlines()[0].split() == ["notebook", "exercise", "result", "first", "failure"]
    assert f"0/{len(load_checks())} exercises passed" in board


def teaching_cell(src: ws.Source) -> str:
    """The markdown cell that ends teaching notebook NN: its exercises and how to start them."""
    exercises = load_checks()
    lines = [
        "## Exercises: write it yourself",
        "",
        "Write the pieces of this notebook yourself; the course grades them against its own oracles.",
        f"`make exercises` creates `exercises/{src.name}.ipynb` (it never overwrites your work);"
        " write each function, then run the check cell below it.",
        "",
    ]
    lines += [f"- `{ex_id}`: {exercises[ex_id].title}" for ex_id in src.exercises]
    lines += [
        "",
        f"`make check` grades every exercise; the reference solutions are in `solutions/{src.path.name}`"
        f" (or `make solution EX={src.exercises[0]}`).",
    ]
    return "\n".join(lines)


def test_each_teaching_notebook_ends_with_its_exercises(sources):
    for src in (s for s in sources if s.name not in NO_TEACHING_NOTEBOOK):
        nb = json.loads((ws.PROJECT_ROOT / "notebooks" / f"{src.name}.ipynb").read_text(encoding="utf-8"))
        last = nb["cells"][-1]
        assert last["cell_type"] == "markdown"
        assert "".join(last["source"]) == teaching_cell(src), f"{src.name}: refresh its Exercises cell"


@pytest.mark.parametrize("number", ["01", "07"])
def test_exercise_notebook_runs_in_a_kernel(number, tmp_path):
    """In Jupyter, with the reference code in place, every check cell shows a passing report."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    src = ws.find_source(number)
    nb = nbformat.reads(ws.notebook_text(ws.exercise_notebook(src, with_solutions=True)), as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    checks = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert len(checks) == len(src.exercises)
    for cell in checks:
        text = cell.outputs[0]["data"]["text/plain"]
        assert f"{cell.metadata['exercise']} · " in text and "cases passed" in text and "✗" not in text, text
