"""run_all.py's runner: one run per build folder, promotion only of what a run staged, a summary whatever happens."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from fake_course import make_notebook, run_all_command
from helpers.course import runner


def test_a_build_folder_is_held_by_one_run_and_a_dead_runs_lock_is_taken_over(tmp_path):
    with runner.BuildLock(tmp_path):
        assert (tmp_path / runner.LOCK_NAME).read_text() == str(os.getpid())
    assert not (tmp_path / runner.LOCK_NAME).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / runner.LOCK_NAME).write_text(dead.stdout.strip())  # a run that no longer exists
    with runner.BuildLock(tmp_path):
        pass


def test_promotion_refuses_a_staging_folder_that_another_run_replaced(tmp_path):
    real, stage = tmp_path / "artifacts", tmp_path / "build" / "staging" / "01_model"
    (real / "figures").mkdir(parents=True)
    (real / "figures" / "curve.png").write_bytes(b"committed")
    copied = runner.prepare_stage(real, stage, "full", "01_model")
    (stage / "figures" / "curve.png").write_bytes(b"written by this run")
    assert runner.promote(stage, real, "full", copied) == ["figures/curve.png"]
    copied = runner.prepare_stage(real, stage, "full", "01_model")
    (stage / runner.STAGE_MARK).write_text("1")  # another run staged over ours
    (stage / "figures" / "curve.png").unlink()  # ... and its folder lacks our figure
    with pytest.raises(RuntimeError, match="changed by another run"):
        runner.promote(stage, real, "full", copied)
    assert (real / "figures" / "curve.png").read_bytes() == b"written by this run"  # nothing deleted


def test_an_executed_copy_that_cannot_be_exported_is_reported_and_the_run_goes_on(tmp_path, capsys):
    out_path = tmp_path / "executed" / "01_model.ipynb"
    out_path.parent.mkdir()
    out_path.write_text('{"cells": [')  # truncated, as on a full disk
    settings = SimpleNamespace(write_back=False, html=True, html_dir=tmp_path / "html")
    row = {"status": "ok"}
    runner._write_back_and_export(tmp_path / "01_model.ipynb", out_path, row, settings)
    assert row["status"] == "ok" and "no HTML report for 01_model.ipynb" in capsys.readouterr().err


def test_a_second_run_on_the_same_build_folder_stops_at_once_and_the_first_loses_nothing(tmp_path, monkeypatch):
    course, root = tmp_path, tmp_path / "committed_artifacts"
    monkeypatch.setenv("COURSE_ARTIFACTS_DIR", str(root))
    (course / "notebooks").mkdir()
    marker = course / "first_is_running"
    make_notebook(
        course / "notebooks" / "01_model.ipynb",
        f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('go')\ntime.sleep(4)",
        "from helpers.course.metrics import MetricRecorder\n"
        "MetricRecorder('01_model', mode).record('model.loss', 9.75, 'nats', 'a loss')",
    )
    cmd = run_all_command(course, "--quick", "--no-html")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=course)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started its cell"
            time.sleep(0.1)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=course)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert "in use by another run_all.py" in second.stderr
    assert first.returncode == 0, err
    assert "1/1 notebooks ran" in out
    metrics = json.loads((root / "quick" / "metrics.json").read_text())
    assert metrics["model.loss"]["value"] == 9.75  # the first run's result reached the artifacts
