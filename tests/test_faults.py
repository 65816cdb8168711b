"""Fault suite: injected faults end in a clear message and lose nothing.

Bad checkpoints and bad options for the command-line tools, failing and interrupted notebooks, truncated downloads,
killed saves and bad model settings. Each test checks the message a user sees and that no committed result changed.
"""
from __future__ import annotations

import http.client
import io
import os
import subprocess
import sys
import urllib.error

import pytest
import torch

import helpers.data as data
from helpers.attention import MultiHeadAttention, scaled_dot_product_attention
from helpers.layers import TransformerConfig
from helpers.models import GPTConfig
from helpers.training import load_checkpoint, save_checkpoint
from helpers.utils import PROJECT_ROOT

# ---- command-line tools: bad checkpoints, bad options, streams -------------------------------------------------

# ---- run_all.py: failing and interrupted notebooks, selection ---------------------------------------------------

import json as _json
import signal as _ra_signal
import time as _ra_time

import nbformat as _nbformat

_RA_PARAMS = "mode = 'full'  # run mode"
_RA_WRITE = ("import os, pathlib\n"
             "from helpers.metrics import MetricRecorder\n"
             "from helpers.utils import artifacts_dir\n"
             "out = artifacts_dir(mode)\n"
             "MetricRecorder('01_model', mode).record('model.loss', 9.75, 'nats', 'a new loss')\n"
             "(out / 'figures').mkdir(exist_ok=True)\n"
             "(out / 'figures' / '01_curve.png').write_bytes(b'a new figure')\n"
             "(out / 'checkpoints' / 'model.pt').write_bytes(b'new weights')\n")


def _ra_notebook(path, *sources):
    nb = _nbformat.v4.new_notebook()
    nb.cells.append(_nbformat.v4.new_markdown_cell(f"# {path.stem}"))
    nb.cells.append(_nbformat.v4.new_code_cell(_RA_PARAMS, metadata={"tags": ["parameters"]}))
    nb.cells.extend(_nbformat.v4.new_code_cell(s) for s in sources)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    _nbformat.write(nb, path)


@pytest.fixture
def committed_course(tmp_path, monkeypatch):
    """A course folder with one notebook slot and committed results in a separate artifacts root (tmp)."""
    from helpers import metrics as _metrics

    root = tmp_path / "committed_artifacts"
    monkeypatch.setenv("COURSE_ARTIFACTS_DIR", str(root))
    (tmp_path / "notebooks").mkdir()
    for name, value in [("01_model", 1.25), ("02_other", 3.5)]:
        rec = _metrics.MetricRecorder(name, "full")
        rec.record(f"{name[3:]}.loss", value, "nats", "a committed loss")
    _metrics.MetricRecorder("01_model", "full").record("model.old_only", 7.0, "x", "recorded by an older 01")
    (root / "figures").mkdir()
    (root / "figures" / "01_curve.png").write_bytes(b"committed figure")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "model.pt").write_bytes(b"committed weights")
    (root / "tuning").mkdir()
    (root / "tuning" / "notes.md").write_text("not copied to staging")
    _metrics.write_results("full")
    readme = tmp_path / "README.md"
    readme.write_text("# Course\n<!-- results:start -->\n<!-- results:end -->\nend\n")
    _metrics.sync_readme(readme)
    return tmp_path


def _ra_snapshot(course):
    root = course / "committed_artifacts"
    files = [root / "metrics.json", root / "results.md", course / "README.md", root / "figures" / "01_curve.png",
             root / "checkpoints" / "model.pt", root / "metrics" / "01_model.json"]
    return {str(p): p.read_bytes() for p in files}


def _ra_cmd(course, *args):
    return [sys.executable, str(PROJECT_ROOT / "run_all.py"), "--notebooks-dir", str(course / "notebooks"),
            "--build-dir", str(course / "build"), "--no-html", *args]


def test_a_failing_notebook_leaves_committed_results_figures_and_checkpoints_as_they_were(committed_course):
    course = committed_course
    _ra_notebook(course / "notebooks" / "01_model.ipynb", _RA_WRITE, "raise RuntimeError('boom after the first metric')")
    before = _ra_snapshot(course)
    res = subprocess.run(_ra_cmd(course), capture_output=True, text=True, timeout=300, cwd=course)
    assert res.returncode == 1, res.stderr
    assert "FAILED: " in res.stderr and "RuntimeError: boom after the first metric" in res.stderr
    assert _ra_snapshot(course) == before
    stage = course / "build" / "full" / "staging" / "01_model"
    assert "artifacts/ unchanged" in res.stderr and str(stage.name) in res.stderr
    assert _json.loads((stage / "metrics" / "01_model.json").read_text())["model.loss"]["value"] == 9.75  # kept apart
    assert not (stage / "tuning").exists()  # tuning/ is never copied around
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX only")
@pytest.mark.parametrize("stubborn", [False, True], ids=["ctrl-c", "cell-ignores-ctrl-c-then-ctrl-c-again"])
def test_ctrl_c_in_run_all_names_the_notebook_and_partial_copy_exits_130_and_changes_nothing(committed_course, stubborn):
    course = committed_course
    marker = course / "cell_is_running"
    ignore = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if stubborn else ""
    _ra_notebook(course / "notebooks" / "01_model.ipynb", _RA_WRITE,
                 f"import pathlib, time\n{ignore}pathlib.Path({str(marker)!r}).write_text('go')\ntime.sleep(120)",
                 "print('never runs')")
    before = _ra_snapshot(course)
    proc = subprocess.Popen(_ra_cmd(course), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=course)
    try:
        deadline = _ra_time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and _ra_time.monotonic() < deadline, "the sleeping cell never started"
            _ra_time.sleep(0.1)
        _ra_time.sleep(0.3)
        proc.send_signal(_ra_signal.SIGINT)
        if stubborn:  # the cell ignores the first Ctrl-C; the second stops the run at once
            _ra_time.sleep(1.0)
            proc.send_signal(_ra_signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    partial = course / "build" / "full" / "executed" / "01_model.ipynb"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 2, err
    assert lines[0].startswith("interrupted: ") and "01_model.ipynb in cell 4" in lines[0]
    assert f"partial copy: {partial}" in lines[0]
    nb = _nbformat.read(partial, as_version=4)
    assert nb.cells[0].source.startswith("**Interrupted**")
    assert any(c.source.startswith("**Interrupted here**") for c in nb.cells)
    assert _ra_snapshot(course) == before
    assert not nb.cells[-1].outputs  # the cell after the interrupted one did not run


def test_a_successful_run_promotes_its_outputs_and_drops_metrics_the_notebook_no_longer_records(committed_course):
    course = committed_course
    _ra_notebook(course / "notebooks" / "01_model.ipynb", _RA_WRITE)
    res = subprocess.run(_ra_cmd(course), capture_output=True, text=True, timeout=300, cwd=course)
    assert res.returncode == 0, res.stderr
    root = course / "committed_artifacts"
    merged = _json.loads((root / "metrics.json").read_text())
    assert merged["model.loss"]["value"] == 9.75 and merged["other.loss"]["value"] == 3.5
    assert "model.old_only" not in merged  # a staged run starts the notebook's metrics afresh
    assert (root / "figures" / "01_curve.png").read_bytes() == b"a new figure"
    assert (root / "checkpoints" / "model.pt").read_bytes() == b"new weights"
    assert "| `model.loss` | 9.75 |" in (root / "results.md").read_text()
    assert "| `model.loss` | 9.75 |" in (course / "README.md").read_text()
    assert (root / "tuning" / "notes.md").exists()
    assert not (course / "build" / "full" / "staging" / "01_model").exists()



# ---- data, saves and model settings ----------------------------------------------------------------------------

def _offline(url, timeout):
    raise urllib.error.URLError("no network")


def test_a_clone_without_shared_data_finds_the_translation_pairs_and_explains_tiny_shakespeare(tmp_path):
    """A fresh clone (committed files only, no ../shared, no network) has the translation pairs in data/."""
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("needs the project's git history to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True, timeout=120)
    script = (
        "import urllib.error, urllib.request\n"
        "def offline(*a, **k): raise urllib.error.URLError('no network')\n"
        "urllib.request.urlopen = offline\n"
        "from helpers.translation import data_file, load_pairs\n"
        "print(len(load_pairs(data_file('small'))), 'pairs')\n"
        "from helpers.data import fetch\n"
        "fetch('tinyshakespeare')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", script], cwd=clone, capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": str(clone)})
    assert "4528 pairs" in res.stdout, res.stderr
    assert "DataUnavailableError" in res.stderr and "put the file at data/tinyshakespeare.txt" in res.stderr
    assert not (clone / "data" / "tinyshakespeare.txt").exists()


def test_the_shipped_translation_pairs_are_the_published_file():
    spec = data.DATASETS["eng-fra-small"]
    path = PROJECT_ROOT / "data" / spec.filename
    assert path.stat().st_size == spec.size and data.sha256_of(path.read_bytes()) == spec.sha256
    assert all(line.count("\t") == 2 and "tatoeba.org #" in line for line in path.read_text("utf-8").splitlines())


def test_a_tampered_translation_file_says_how_to_restore_it(tmp_path):
    (tmp_path / "eng-fra-tatoeba-small.tsv").write_text("Go.\tVa !\tno attribution\n", encoding="utf-8")
    with pytest.raises(ValueError, match="checksum") as err:
        data.fetch("eng-fra-small", data_dir=tmp_path)
    assert "git checkout" in str(err.value) and "download" not in str(err.value)


@pytest.mark.parametrize("failure", ["incomplete-read", "short-body", "reset"])
def test_a_cut_off_download_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch, failure):
    spec = data.DataFile("f.txt", "https://example.invalid/f.txt", data.sha256_of(b"hello world"))
    monkeypatch.setitem(data.DATASETS, "fake", spec)

    class Response(io.BytesIO):
        headers = {"Content-Length": "11"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, *args):
            if failure == "incomplete-read":
                raise http.client.IncompleteRead(b"hello", 6)
            if failure == "reset":
                raise ConnectionResetError("connection reset by peer")
            return b"hello"  # the server closed early: 5 of the 11 bytes announced

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(data.DataUnavailableError, match="could not download .*put the file at"):
        data.fetch("fake", data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_save_keeps_the_old_checkpoint_and_the_next_save_removes_its_leftover(tmp_path):
    target = tmp_path / "model.pt"
    save_checkpoint({"step": 1}, target)
    writer = (
        "import os, sys, time\n"
        "import helpers.utils as utils\n"
        "from helpers.training import save_checkpoint\n"
        "def hang(*a):\n"
        "    print('written', flush=True); time.sleep(60)\n"
        "utils.os.replace = hang\n"  # the writer is killed after writing its temporary file, before the rename
        "save_checkpoint({'step': 2, 'w': __import__('torch').zeros(100_000)}, sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(target)], stdout=subprocess.PIPE, text=True,
                            cwd=PROJECT_ROOT)
    assert proc.stdout.readline().strip() == "written"
    proc.kill()
    proc.wait(timeout=30)
    leftovers = list(tmp_path.glob(".model.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 100_000
    assert load_checkpoint(target)["step"] == 1  # the old checkpoint is intact
    save_checkpoint({"step": 3}, target)
    assert load_checkpoint(target)["step"] == 3
    assert list(tmp_path.glob(".model.pt.*.tmp")) == []  # the killed writer's leftover is gone


def test_a_save_leaves_a_live_writers_temporary_file_alone(tmp_path):
    target = tmp_path / "model.pt"
    live = tmp_path / f".model.pt.{os.getppid()}.tmp"  # the parent process is alive
    live.write_bytes(b"in progress")
    save_checkpoint({"step": 1}, target)
    assert live.exists()


@pytest.mark.parametrize("make, message", [
    (lambda: scaled_dot_product_attention(torch.ones(1, 2, 0), torch.ones(1, 2, 0), torch.ones(1, 2, 3)),
     "d_k >= 1"),
    (lambda: scaled_dot_product_attention(torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 2, 4),
                                          dropout_p=-0.1), r"dropout probability must be in \[0, 1\], got -0.1"),
    (lambda: scaled_dot_product_attention(torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 2, 4),
                                          dropout_p=float("nan")), "dropout probability"),
    (lambda: MultiHeadAttention(d_model=8, n_heads=0), "n_heads must be positive|positive, got d_model=8, n_heads=0"),
    (lambda: MultiHeadAttention(d_model=8, n_heads=2, dropout=-0.5), "dropout probability"),
    (lambda: TransformerConfig(d_model=8, n_heads=0), "n_heads must be positive"),
    (lambda: TransformerConfig(d_model=0, n_heads=1), "d_model must be positive"),
    (lambda: TransformerConfig(d_model=8, n_heads=2, dropout=-0.1), "dropout must be a probability"),
    (lambda: TransformerConfig(d_model=8, n_heads=2, attn_dropout=1.5), "attn_dropout must be a probability"),
    (lambda: GPTConfig(vocab_size=10, n_heads=0), "n_heads must be positive"),
])
def test_bad_model_settings_name_the_setting(make, message):
    with pytest.raises(ValueError, match=message):
        make()
