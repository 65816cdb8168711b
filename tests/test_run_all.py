"""run_all.py: selection, parameter injection, failure reporting and write-back cleaning."""

import os
import subprocess
import sys

import nbformat
import pytest

import run_all
from fake_course import make_notebook, run_all_command
from helpers.course import runner
from helpers.course.utils import PROJECT_ROOT


@pytest.fixture
def course(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    make_notebook(nbs / "01_good.ipynb", "print('mode is', mode)")
    make_notebook(nbs / "02_bad.ipynb", "x = 1", "raise ValueError('boom in cell three')")
    make_notebook(nbs / "03_after.ipynb", "print('ran after')")
    return tmp_path


def run(course, *args):
    cmd = run_all_command(course, *args)
    env = {k: v for k, v in os.environ.items() if k != "COURSE_ARTIFACTS_DIR"}  # a fake course's artifacts/ is its own
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=course, env=env)


@pytest.fixture
def ten(tmp_path):
    """Notebooks 01-10 (never run): numbers 1 and 10, and two names that share a prefix."""
    names = [
        "01_attention_by_hand",
        "02_attention_masks",
        "03_heads",
        "04_positions",
        "05_block",
        "06_char_gpt",
        "07_generation",
        "08_translation",
        "09_profiling",
        "10_experiments",
    ]
    for name in names:
        make_notebook(tmp_path / f"{name}.ipynb", "pass")
    return run_all.discover(tmp_path)


def stems(paths):
    return [p.stem for p in paths]


def test_selection_by_number_name_and_from(course):
    nbs = run_all.discover(course / "notebooks")
    assert [p.stem for p in nbs] == ["01_good", "02_bad", "03_after"]
    assert [p.stem for p in run_all.select(nbs, ["3"], None)] == ["03_after"]
    assert [p.stem for p in run_all.select(nbs, ["01_good", "02"], None)] == ["01_good", "02_bad"]
    assert [p.stem for p in run_all.select(nbs, None, "02")] == ["02_bad", "03_after"]
    with pytest.raises(run_all.SelectionError, match="--only 7: no notebook is numbered 07"):
        run_all.select(nbs, ["7"], None)


def test_numbers_select_exactly_one_notebook(ten):
    assert stems(run_all.select(ten, ["1"], None)) == ["01_attention_by_hand"]
    assert stems(run_all.select(ten, ["01"], None)) == ["01_attention_by_hand"]
    assert stems(run_all.select(ten, ["10"], None)) == ["10_experiments"]
    assert stems(run_all.select(ten, ["1", "10"], None)) == ["01_attention_by_hand", "10_experiments"]
    assert stems(run_all.select(ten, None, "9")) == ["09_profiling", "10_experiments"]
    assert len(run_all.select(ten, None, "1")) == 10
    for bad in (["0"], ["00"], ["11"]):
        with pytest.raises(run_all.SelectionError, match="no notebook is numbered"):
            run_all.select(ten, bad, None)
    with pytest.raises(run_all.SelectionError, match="--from 0: no notebook is numbered 00"):
        run_all.select(ten, None, "0")


def test_names_and_unique_prefixes_select_and_an_ambiguous_prefix_lists_the_candidates(ten):
    assert stems(run_all.select(ten, ["06_char_gpt"], None)) == ["06_char_gpt"]
    assert stems(run_all.select(ten, ["06_char_gpt.ipynb"], None)) == ["06_char_gpt"]
    assert stems(run_all.select(ten, ["char"], None)) == ["06_char_gpt"]  # a prefix of the name after the number
    assert stems(run_all.select(ten, ["03_h"], None)) == ["03_heads"]
    with pytest.raises(
        run_all.SelectionError,
        match="--only attention is ambiguous: it matches 01_attention_by_hand, 02_attention_masks",
    ):
        run_all.select(ten, ["attention"], None)
    with pytest.raises(run_all.SelectionError, match="--from attention is ambiguous"):
        run_all.select(ten, None, "attention")
    with pytest.raises(run_all.SelectionError, match="--only 0_: no notebook matches it"):
        run_all.select(ten, ["0_"], None)
    with pytest.raises(run_all.SelectionError, match="--only nothing_like_it: no notebook matches it"):
        run_all.select(ten, ["nothing_like_it"], None)


def test_bad_selections_and_a_missing_notebooks_folder_are_clear_errors(course, tmp_path):
    for args, needle in [
        (["--only", "0"], "--only 0: no notebook is numbered 00"),
        (["--only", "0_"], "no notebook matches it"),
        (["--from", "9"], "--from 9: no notebook is numbered 09"),
    ]:
        res = run(course, *args, "--list")
        assert (
            res.returncode == 2 and "error: " in res.stderr and needle in res.stderr and "Traceback" not in res.stderr
        )
    cmd = [sys.executable, str(PROJECT_ROOT / "run_all.py"), "--notebooks-dir", str(tmp_path / "nowhere"), "--list"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no notebooks folder at" in res.stderr and "Traceback" not in res.stderr


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
    assert (course / "build" / "quick" / "html" / "01_good.html").exists()


def test_a_fake_course_writes_its_results_beside_its_notebooks_never_into_the_real_artifacts(course):
    real = PROJECT_ROOT / "artifacts" / "quick" / "results.md"
    before = real.stat().st_mtime_ns if real.exists() else None
    res = run(course, "--quick", "--only", "1", "--no-html")
    assert res.returncode == 0, res.stderr
    assert "| metric |" in (course / "artifacts" / "quick" / "results.md").read_text()
    assert (real.stat().st_mtime_ns if real.exists() else None) == before


def test_keep_going_runs_later_notebooks(course):
    res = run(course, "--quick", "--keep-going", "--no-html")
    assert res.returncode == 1
    assert (course / "build" / "quick" / "executed" / "03_after.ipynb").exists()
    assert "2/3 notebooks ran" in res.stdout


def test_clean_for_commit_drops_run_metadata():
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": "/abs/path"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "x", metadata={"papermill": {"duration": 1.0}, "execution": {"iopub.status.idle": "2026-01-01"}}
        ),
        nbformat.v4.new_code_cell("mode = 'quick'", metadata={"tags": ["injected-parameters"]}),
    ]
    cleaned = runner.clean_for_commit(nb)
    assert "papermill" not in cleaned.metadata and len(cleaned.cells) == 1
    assert cleaned.cells[0].metadata == {}


def test_committed_notebooks_name_the_course_kernel():
    import nbformat

    from helpers.course.runner import clean_for_commit
    from helpers.course.utils import COURSE_KERNEL, NOTEBOOKS_DIR

    for path in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        assert nbformat.read(path, as_version=4).metadata["kernelspec"]["name"] == COURSE_KERNEL["name"], path.name
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(kernelspec={"name": "python3", "display_name": "Python 3"}, papermill={"duration": 1})
    assert clean_for_commit(nb).metadata == {"kernelspec": COURSE_KERNEL}


def test_reuse_checkpoints_reaches_only_notebooks_that_declare_it(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    trains = "mode = 'full'  # run mode\nreuse_checkpoint = False  # load the saved model"
    make_notebook(nbs / "01_trains.ipynb", "print('reuse is', reuse_checkpoint)", parameters=trains)
    make_notebook(nbs / "02_plain.ipynb", "print('defined:', 'reuse_checkpoint' in dir())")
    for flag, expected in (([], "reuse is False"), (["--reuse-checkpoints"], "reuse is True")):
        res = run(tmp_path, "--quick", "--no-html", *flag)
        assert res.returncode == 0, res.stderr
        executed = tmp_path / "build" / "quick" / "executed"
        assert expected in str(nbformat.read(executed / "01_trains.ipynb", as_version=4).cells[-1].outputs)
        assert "defined: False" in str(nbformat.read(executed / "02_plain.ipynb", as_version=4).cells[-1].outputs)
    assert runner.declared_parameters(nbs / "01_trains.ipynb") == trains
