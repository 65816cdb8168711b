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
