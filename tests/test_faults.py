"""Fault suite: injected faults end in a clear message and lose nothing.

Bad checkpoints and bad options for the command-line tools, failing and interrupted notebooks, truncated downloads,
killed saves and bad model settings. Each test checks the message a user sees and that no committed result changed.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import urllib.error

import nbformat
import pytest
import torch

import helpers.course.data as data
from fake_course import make_notebook, run_all_command
from helpers.attention import MultiHeadAttention, scaled_dot_product_attention
from helpers.course.checkpoints import load_checkpoint, model_checkpoint, save_checkpoint
from helpers.course.utils import PROJECT_ROOT
from helpers.decoding import generate_text
from helpers.layers import TransformerConfig
from helpers.models import GPT, GPTConfig
from helpers.tokenizers import CharTokenizer

# ---- command-line tools: bad checkpoints, bad options, streams -------------------------------------------------

_CLI_TEXT = "to be or not to be, that is the question\n"
_REAL = PROJECT_ROOT / "artifacts" / "checkpoints"


def _tiny_gpt_checkpoint(path):
    """A tiny char-GPT checkpoint as notebook 06 saves it (GPT.checkpoint)."""
    torch.manual_seed(0)
    tok = CharTokenizer.from_text(_CLI_TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, d_model=16, n_heads=2, n_layers=1))
    save_checkpoint(model_checkpoint(model, tok), path)
    return path


def _tiny_translation_checkpoint(path):
    """A tiny translation checkpoint written by Translator.save (notebook 08's layout)."""
    from helpers.course.translator import Translator
    from helpers.models import Seq2Seq, Seq2SeqConfig
    from helpers.tokenizers import SPECIALS, Tokenizer, Vocab

    torch.manual_seed(0)
    src = Vocab(list(SPECIALS) + ["i", "am", "cold", ".", "where", "is", "tom", "?"])
    tgt = Vocab(list(SPECIALS) + ["j'", "ai", "froid", ".", "où", "est", "tom", "?"])
    cfg = Seq2SeqConfig(
        len(src), len(tgt), d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=32, dropout=0.0, max_len=16
    )
    tr = Translator(
        Seq2Seq(cfg),
        Tokenizer("en"),
        Tokenizer("fr").fit_truecase(["J'ai froid."]),
        src,
        tgt,
        extra={"decoding": {"beam": 2, "alpha": 0.6, "unk": "keep"}},
    )
    return tr.save(path)


class _RunsACommand:
    """Unpickling this would run a shell command; the safe loader must refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """Good tiny checkpoints of both kinds and one bad checkpoint of each kind of fault."""
    d = tmp_path_factory.mktemp("cli")
    files = {
        "gpt": _tiny_gpt_checkpoint(d / "tiny_gpt.pt"),
        "translation": _tiny_translation_checkpoint(d / "tiny_tr.pt"),
        "missing": d / "no_such.pt",
        "empty": d / "empty.pt",
        "truncated": d / "truncated.pt",
        "garbage": d / "garbage.pt",
        "directory": d / "a_folder.pt",
        "refused": d / "refused.pt",
        "marker": d / "code_ran",
    }
    files["empty"].write_bytes(b"")
    real = (_REAL / "char_gpt.pt").read_bytes()  # read, never written
    files["truncated"].write_bytes(real[: len(real) // 2])
    files["garbage"].write_bytes(random.Random(0).randbytes(4096))
    files["directory"].mkdir()
    torch.save({"model": _RunsACommand(files["marker"])}, files["refused"])
    return files


def _run_tool(*args, stdin=None, timeout=60):
    env = {**os.environ, "COURSE_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=PROJECT_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _assert_clean_error(res, *needles):
    """Exit status 2, an `error: ...` line on stderr that contains every needle, no traceback, no unsafe advice."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "weights_only=False" not in res.stderr, res.stderr[-2000:]
    assert "error:" in res.stderr.strip().splitlines()[-1], res.stderr
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)
    assert res.stdout == ""


_BAD_CHECKPOINTS = {  # fault -> what the message must say (besides the file name)
    "missing": "does not exist",
    "empty": "is empty",
    "truncated": "truncated or damaged",
    "garbage": "not a PyTorch checkpoint",
    "directory": "is a directory",
    "refused": "refused by the safe loader",
}


@pytest.mark.parametrize("tool", ["sample.py", "translate.py"])
@pytest.mark.parametrize("fault", list(_BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_a_clear_error_naming_the_file(cli_files, tool, fault):
    path = cli_files[fault]
    args = ["--length", "5"] if tool == "sample.py" else ["I am cold."]
    res = _run_tool(tool, "--checkpoint", path, *args)
    _assert_clean_error(res, str(path), _BAD_CHECKPOINTS[fault])
    assert not cli_files["marker"].exists()  # the pickled command never ran


def test_each_tool_names_the_kind_of_the_other_tools_checkpoint(cli_files):
    res = _run_tool("sample.py", "--checkpoint", "artifacts/checkpoints/translation.pt")
    _assert_clean_error(
        res,
        "artifacts/checkpoints/translation.pt is a translation checkpoint (from notebook 08), "
        "not a char-GPT checkpoint (from notebook 06 or 11, or train_gpt.py --export)",
    )
    res = _run_tool("translate.py", "--checkpoint", cli_files["gpt"], "I am cold.")
    _assert_clean_error(
        res,
        f"{cli_files['gpt']} is a char-GPT checkpoint (from notebook 06 or 11, or train_gpt.py --export), "
        f"not a translation checkpoint (from notebook 08)",
    )


def test_load_checkpoint_errors_are_checkpoint_errors_and_missing_is_still_file_not_found(cli_files):
    from helpers.course.checkpoints import CheckpointError, checkpoint_kind

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(cli_files["missing"])
    for fault in _BAD_CHECKPOINTS:
        with pytest.raises(CheckpointError, match=_BAD_CHECKPOINTS[fault]) as info:
            load_checkpoint(cli_files[fault])
        assert str(cli_files[fault]) in str(info.value) and "weights_only=False" not in str(info.value)
    assert checkpoint_kind(load_checkpoint(cli_files["gpt"])) == "char-gpt"
    assert checkpoint_kind(load_checkpoint(cli_files["translation"], kind="translation")) == "translation"
    with pytest.raises(CheckpointError, match="is a translation checkpoint"):
        load_checkpoint(cli_files["translation"], kind="char-gpt")
    other = cli_files["gpt"].with_name("other.pt")
    save_checkpoint({"weights": torch.ones(2)}, other)
    with pytest.raises(CheckpointError, match="is not a char-GPT checkpoint.*'weights'"):
        load_checkpoint(other, kind="char-gpt")
    broken = cli_files["gpt"].with_name("broken_gpt.pt")  # the right keys, weights of the wrong shapes
    ckpt = load_checkpoint(cli_files["gpt"])
    save_checkpoint({**ckpt, "config": {**ckpt["config"], "d_model": 32}}, broken)
    res = _run_tool("sample.py", "--checkpoint", broken, "--length", "5")
    _assert_clean_error(res, str(broken), "does not hold a usable char-GPT")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--length", "1000000000"], "--length: must be in 0..100,000"),
        (["--length", "-1"], "--length"),
        (["--temperature", "0"], "--temperature: must be a finite number > 0"),
        (["--temperature", "nan"], "--temperature"),
        (["--temperature", "inf"], "--temperature"),
        (["--top-k", "0"], "--top-k: must be >= 1"),
        (["--top-p", "0"], "--top-p: must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-p", "nan"], "--top-p"),
    ],
)
def test_sample_rejects_bad_options(args, needle):
    _assert_clean_error(_run_tool("sample.py", *args), needle)


def test_sample_rejects_options_that_need_the_checkpoint_and_a_bad_device(cli_files):
    res = _run_tool("sample.py", "--checkpoint", cli_files["gpt"], "--top-k", "1000")
    _assert_clean_error(res, f"--top-k: must be in 1..{len(set(_CLI_TEXT))} (the vocabulary size)")
    res = _run_tool("sample.py", "--checkpoint", cli_files["gpt"], "--prompt", "ROMEO!")
    _assert_clean_error(res, "--prompt", "outside the vocabulary")
    res = _run_tool("sample.py", "--checkpoint", cli_files["gpt"], "--device", "abacus")
    _assert_clean_error(res, "--device", "unknown device 'abacus'")
    assert "0..100,000" in _run_tool("sample.py", "--help").stdout  # the limit is in the help


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--beam", "0"], "--beam: must be >= 1"),
        (["--beam", "-1"], "--beam: must be >= 1"),
        (["--beam", "two"], "--beam"),
        (["--alpha", "nan"], "--alpha: must be a finite number >= 0"),
        (["--alpha", "inf"], "--alpha: must be a finite number >= 0"),
        (["--alpha", "-0.5"], "--alpha"),
        (["--greedy", "--beam", "3"], "not allowed with"),
        (["--file", "no_such_file.txt"], "--file no_such_file.txt: no such file"),
        (["--file", "notebooks"], "--file notebooks is a directory"),
    ],
)
def test_translate_rejects_bad_options(args, needle):
    _assert_clean_error(_run_tool("translate.py", *args, stdin="I am cold.\n"), needle)


def test_translate_rejects_input_that_is_not_utf8_and_a_bad_device(cli_files, tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("I am cold.\nCafé?\n".encode("latin-1"))
    res = _run_tool("translate.py", "--checkpoint", cli_files["translation"], "--file", latin1)
    _assert_clean_error(res, f"--file {latin1} is not UTF-8 text", "line 2")
    res = subprocess.run(
        [sys.executable, "translate.py", "--checkpoint", str(cli_files["translation"])],
        cwd=PROJECT_ROOT,
        input=b"caf\xe9\n",
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 2 and b"stdin is not UTF-8 text" in res.stderr and b"Traceback" not in res.stderr
    res = _run_tool("translate.py", "--checkpoint", cli_files["translation"], "--device", "abacus", "I am cold.")
    _assert_clean_error(res, "--device", "unknown device 'abacus'")


def test_translate_keeps_blank_lines_so_output_lines_up_with_input(cli_files, tmp_path):
    from helpers.course.translator import Translator

    expected = Translator.load(cli_files["translation"]).translate(["I am cold.", "Where is Tom?"], beam=2, unk="keep")
    res = _run_tool("translate.py", "--checkpoint", cli_files["translation"], stdin="I am cold.\n\nWhere is Tom?\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n") == [expected[0], "", expected[1], ""]
    assert res.stderr.count("device:") == 1 and "device:" not in res.stdout
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(
        b"\r\nI am cold.\r\n   \r\nWhere is Tom?"
    )  # Windows line ends, a blank first line, no final newline
    res = _run_tool("translate.py", "--checkpoint", cli_files["translation"], "--file", crlf)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n") == ["", expected[0], "", expected[1], ""]


def test_sample_streams_the_same_text_as_generate_text(cli_files):
    from helpers.course.checkpoints import load_char_gpt

    model, tok = load_char_gpt(cli_files["gpt"])
    res = _run_tool(
        "sample.py",
        "--checkpoint",
        cli_files["gpt"],
        "--prompt",
        "to be",
        "--length",
        "40",
        "--seed",
        "3",
        "--top-k",
        "5",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == generate_text(model, tok, "to be", 40, seed=3, temperature=0.8, top_k=5) + "\n"
    assert res.stderr.count("device: cpu") == 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX only")
def test_ctrl_c_keeps_the_streamed_text_and_exits_130(cli_files):
    env = {**os.environ, "COURSE_DEVICE": "cpu"}
    # A shell starts background jobs with SIGINT ignored, and a child inherits that: restore the default, as in a
    # terminal, so the test does not depend on how the test run itself was started.
    proc = subprocess.Popen(
        [
            sys.executable,
            "sample.py",
            "--checkpoint",
            str(cli_files["gpt"]),
            "--prompt",
            "to be",
            "--length",
            "100000",
            "--no-cache",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen, deadline = b"", time.monotonic() + 60
    try:
        while len(seen) < len("to be") + 30:  # the prompt and some generated text have been printed
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no streamed text within 60 s (got {seen!r})"
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, proc.stderr.read().decode()
            seen += chunk
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = (seen + rest).decode(), err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert out.startswith("to be") and len(out) >= len("to be") + 30 and len(out) < 100_000  # stopped early


# ---- run_all.py: failing and interrupted notebooks, selection ---------------------------------------------------

_RA_WRITE = (
    "import os, pathlib\n"
    "from helpers.course.metrics import MetricRecorder\n"
    "from helpers.course.utils import artifacts_dir\n"
    "out = artifacts_dir(mode)\n"
    "MetricRecorder('01_model', mode).record('model.loss', 9.75, 'nats', 'a new loss')\n"
    "(out / 'figures').mkdir(exist_ok=True)\n"
    "(out / 'figures' / '01_curve.png').write_bytes(b'a new figure')\n"
    "(out / 'checkpoints' / 'model.pt').write_bytes(b'new weights')\n"
)


@pytest.fixture
def committed_course(tmp_path, monkeypatch):
    """A course folder with one notebook slot and committed results in a separate artifacts root (tmp)."""
    from helpers.course import metrics as _metrics

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
    files = [
        root / "metrics.json",
        root / "results.md",
        course / "README.md",
        root / "figures" / "01_curve.png",
        root / "checkpoints" / "model.pt",
        root / "metrics" / "01_model.json",
    ]
    return {str(p): p.read_bytes() for p in files}


def _ra_cmd(course, *args):
    return run_all_command(course, "--no-html", *args)


def test_a_failing_notebook_leaves_committed_results_figures_and_checkpoints_as_they_were(committed_course):
    course = committed_course
    make_notebook(
        course / "notebooks" / "01_model.ipynb", _RA_WRITE, "raise RuntimeError('boom after the first metric')"
    )
    before = _ra_snapshot(course)
    res = subprocess.run(_ra_cmd(course, "--write-back"), capture_output=True, text=True, timeout=300, cwd=course)
    assert res.returncode == 1, res.stderr
    assert "FAILED: " in res.stderr and "RuntimeError: boom after the first metric" in res.stderr
    assert _ra_snapshot(course) == before
    stage = course / "build" / "full" / "staging" / "01_model"
    assert "artifacts/ unchanged" in res.stderr and str(stage.name) in res.stderr
    assert json.loads((stage / "metrics" / "01_model.json").read_text())["model.loss"]["value"] == 9.75  # kept apart
    assert not (stage / "tuning").exists()  # tuning/ is never copied around
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX only")
@pytest.mark.parametrize("stubborn", [False, True], ids=["ctrl-c", "cell-ignores-ctrl-c-then-ctrl-c-again"])
def test_ctrl_c_in_run_all_names_the_notebook_and_partial_copy_exits_130_and_changes_nothing(
    committed_course, stubborn
):
    course = committed_course
    marker = course / "cell_is_running"
    ignore = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if stubborn else ""
    make_notebook(
        course / "notebooks" / "01_model.ipynb",
        _RA_WRITE,
        f"import pathlib, time\n{ignore}pathlib.Path({str(marker)!r}).write_text('go')\ntime.sleep(120)",
        "print('never runs')",
    )
    before = _ra_snapshot(course)
    proc = subprocess.Popen(
        _ra_cmd(course, "--write-back"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=course
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the sleeping cell never started"
            time.sleep(0.1)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        if stubborn:  # the cell ignores the first Ctrl-C; the second stops the run at once
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
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
    nb = nbformat.read(partial, as_version=4)
    assert nb.cells[0].source.startswith("**Interrupted**")
    assert any(c.source.startswith("**Interrupted here**") for c in nb.cells)
    assert _ra_snapshot(course) == before
    assert not nb.cells[-1].outputs  # the cell after the interrupted one did not run


def test_a_plain_full_run_writes_its_results_beside_the_build_and_leaves_the_committed_ones(committed_course):
    course = committed_course
    make_notebook(course / "notebooks" / "01_model.ipynb", _RA_WRITE)
    before = _ra_snapshot(course)
    res = subprocess.run(_ra_cmd(course), capture_output=True, text=True, timeout=300, cwd=course)
    assert res.returncode == 0, res.stderr
    assert _ra_snapshot(course) == before  # artifacts/ and the README are the committed ones
    run = course / "build" / "full" / "artifacts"
    merged = json.loads((run / "metrics.json").read_text())
    assert merged["model.loss"]["value"] == 9.75 and merged["other.loss"]["value"] == 3.5
    assert (run / "figures" / "01_curve.png").read_bytes() == b"a new figure"
    assert (run / "checkpoints" / "model.pt").read_bytes() == b"new weights"
    assert "results: build/full/artifacts/results.md" in res.stdout.replace(str(course) + "/", "")


def test_a_successful_run_promotes_its_outputs_and_drops_metrics_the_notebook_no_longer_records(committed_course):
    course = committed_course
    make_notebook(course / "notebooks" / "01_model.ipynb", _RA_WRITE)
    res = subprocess.run(_ra_cmd(course, "--write-back"), capture_output=True, text=True, timeout=300, cwd=course)
    assert res.returncode == 0, res.stderr
    root = course / "committed_artifacts"
    merged = json.loads((root / "metrics.json").read_text())
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
        "from helpers.course.datasets import data_file, load_pairs\n"
        "print(len(load_pairs(data_file('small'))), 'pairs')\n"
        "from helpers.course.data import fetch\n"
        "fetch('tinyshakespeare')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", script],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(clone)},
    )
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
        "import helpers.course.utils as utils\n"
        "from helpers.course.checkpoints import save_checkpoint\n"
        "def hang(*a):\n"
        "    print('written', flush=True); time.sleep(60)\n"
        "utils.os.replace = hang\n"  # the writer is killed after writing its temporary file, before the rename
        "save_checkpoint({'step': 2, 'w': __import__('torch').zeros(100_000)}, sys.argv[1])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(target)], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT
    )
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


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: scaled_dot_product_attention(torch.ones(1, 2, 0), torch.ones(1, 2, 0), torch.ones(1, 2, 3)),
            "d_k >= 1",
        ),
        (
            lambda: scaled_dot_product_attention(
                torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 2, 4), dropout_p=-0.1
            ),
            r"dropout probability must be in \[0, 1\], got -0.1",
        ),
        (
            lambda: scaled_dot_product_attention(
                torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 2, 4), dropout_p=float("nan")
            ),
            "dropout probability",
        ),
        (
            lambda: MultiHeadAttention(d_model=8, n_heads=0),
            "n_heads must be positive|positive, got d_model=8, n_heads=0",
        ),
        (lambda: MultiHeadAttention(d_model=8, n_heads=2, dropout=-0.5), "dropout probability"),
        (lambda: TransformerConfig(d_model=8, n_heads=0), "n_heads must be positive"),
        (lambda: TransformerConfig(d_model=0, n_heads=1), "d_model must be positive"),
        (lambda: TransformerConfig(d_model=8, n_heads=2, dropout=-0.1), "dropout must be a probability"),
        (lambda: TransformerConfig(d_model=8, n_heads=2, attn_dropout=1.5), "attn_dropout must be a probability"),
        (lambda: GPTConfig(vocab_size=10, n_heads=0), "n_heads must be positive"),
    ],
)
def test_bad_model_settings_name_the_setting(make, message):
    with pytest.raises(ValueError, match=message):
        make()
