"""Recorded runs carry their provenance: the commit, the machine, the PyTorch version and the command."""

import re
import subprocess
import sys

import torch

from helpers.course.runs import describe_device
from helpers.course.utils import PROJECT_ROOT


def test_a_record_names_its_commit_machine_torch_and_command():
    info = describe_device(torch.device("cpu"))
    assert info["torch"] == torch.__version__ and info["threads"] == torch.get_num_threads()
    assert info["cpu"] and info["device"] == "cpu"
    if (PROJECT_ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert info["commit"] == head.stdout.strip() and re.fullmatch(r"[0-9a-f]{40}", info["commit"])
        assert isinstance(info["dirty"], bool)
    script = "import json, torch; from helpers.course.runs import describe_device as d; print(d(torch.device('cpu')))"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert "'command': '-c'" in res.stdout, res.stderr
