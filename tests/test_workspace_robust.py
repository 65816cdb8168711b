"""make check as a learner meets it: endless loops, global state, syntax errors, long hints."""

import json
import os
import subprocess
import sys

import pytest

from grader import workspace as ws
from helpers.course.utils import PROJECT_ROOT


def notebook_with(path, cells):
    """Write a workspace notebook: (exercise id or "", source) code cells, each exercise followed by its check cell."""
    nb_cells = []
    for ex_id, source in cells:
        meta = {"exercise": ex_id} if ex_id else {}
        nb_cells.append(
            {"cell_type": "code", "metadata": meta, "source": source, "outputs": [], "execution_count": None}
        )
        if ex_id:
            check = {"exercise": ex_id, "tags": ["check"]}
            nb_cells.append(
                {"cell_type": "code", "metadata": check, "source": "", "outputs": [], "execution_count": None}
            )
    path.write_text(json.dumps({"cells": nb_cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


GREEDY = "def greedy_next(logits):\n    return logits.argmax(dim=-1)\n"


def test_an_endless_loop_is_stopped_at_the_time_limit_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "EXERCISE_SECONDS", 1.0)
    notebook_with(
        tmp_path / "07_generation.ipynb", [("07.greedy", "def greedy_next(logits):\n    while True:\n        pass\n")]
    )
    (report,) = [g.report for g in ws.grade_notebook(tmp_path / "07_generation.ipynb")]
    assert not report.passed and "the check ran longer than 1 s" in report.first_failure
    assert "endless loop" in report.first_failure


def test_a_syntax_error_names_the_learners_cell_and_line(tmp_path):
    notebook_with(tmp_path / "07_generation.ipynb", [("07.greedy", "def greedy_next(logits):\n    return (logits\n")])
    (report,) = [g.report for g in ws.grade_notebook(tmp_path / "07_generation.ipynb")]
    assert "SyntaxError" in report.first_failure and "(cell 1 (07.greedy), line 2)" in report.first_failure
    assert "workspace.py" not in report.first_failure


def test_each_notebook_is_graded_in_a_fresh_process(tmp_path):
    """A notebook that switches gradients off for the whole process must not fail another notebook's checks."""
    notebook_with(
        tmp_path / "07_generation.ipynb", [("", "import torch\ntorch.set_grad_enabled(False)\n"), ("07.greedy", GREEDY)]
    )
    clean = ws.grade_in_fresh_process(tmp_path / "07_generation.ipynb", ["07.greedy"])
    assert [g.report.passed for g in clean] == [True]
    import torch

    assert torch.is_grad_enabled()  # the grading process was another one


@pytest.mark.skipif(sys.platform == "win32", reason="uses the make check command line on POSIX")
def test_check_streams_its_rows_with_the_whole_hint(tmp_path):
    work = tmp_path / "exercises"
    work.mkdir()
    hint_source = "def greedy_next(logits):\n    return logits.argmin(dim=-1)\n"  # the smallest logit: a named mistake
    notebook_with(work / "07_generation.ipynb", [("07.greedy", hint_source)])
    script = (
        f"import sys; from grader import workspace as ws; ws.WORKSPACE_DIR = ws.Path({str(work)!r}); "
        "sys.exit(ws.main(['check']))"
    )
    env = {**os.environ, "COURSE_EXERCISE_SECONDS": "30"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
    lines = res.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.split()[:3] == ["07_generation", "07.greedy", "failed"]]
    assert failed, res.stdout + res.stderr
    detail = lines[failed[0] + 1]
    assert detail.startswith("    ") and not detail.endswith("...")  # the first failure in full, hint included
    assert lines[-1].endswith("exercises passed")


def test_resetting_one_exercise_keeps_the_rest_of_the_learners_notebook(tmp_path):
    src = ws.find_source("02")
    path = ws.workspace_path(src, tmp_path)
    notebook = ws.exercise_notebook(src, with_solutions=True)  # a learner who solved everything
    original = ws.notebook_text(notebook)
    path.write_text(original, encoding="utf-8")
    said = []
    ws.reset("02.sdpa", tmp_path, out=said.append)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]

    def sources(exercise):
        return ["".join(c["source"]) for c in cells if c.get("metadata", {}).get("exercise") == exercise]

    assert any("NotImplementedError" in s for s in sources("02.sdpa"))  # this one is a stub again
    assert not any("NotImplementedError" in s for s in sources("02.causal_mask"))  # the others are kept
    backups = list((tmp_path / ws.BACKUP_DIR_NAME).glob("02_*.ipynb"))
    assert len(backups) == 1 and backups[0].read_text(encoding="utf-8") == original  # the learner's copy, whole
    with pytest.raises(ws.WorkspaceError, match="no exercise '02.nope'"):
        ws.reset("02.nope", tmp_path, out=said.append)
