"""Training on several processes (train_gpt.py, helpers/course/distributed.py): the same steps as one process,
exact resume.

Two-process runs go through torchrun in a subprocess (gloo on the CPU, one thread each) with a tiny GPT on a 6 KB
text, so that the whole file takes seconds. A small launcher wraps train_gpt.main: it records the batch slice that
each rank trains on, and can plant a slicing mistake, to show that the checks below would catch one.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import train_gpt
from helpers.course.datasets import get_batch, split_data
from helpers.course.distributed import local_batch_size, shard_batch
from helpers.tokenizers import CharTokenizer

ROOT = Path(__file__).resolve().parent.parent
STEPS, BATCH, BLOCK = 6, 8, 16
TINY = [
    *("--n-layers", "2", "--d-model", "32", "--n-heads", "2", "--block-size", str(BLOCK), "--dropout", "0"),
    *("--batch-size", str(BATCH), "--max-steps", str(STEPS), "--warmup-steps", "2", "--lr", "3e-3"),
    *("--eval-interval", "3", "--eval-windows", "8"),
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

# Runs train_gpt.main in each torchrun process, recording the slice each rank trains on; PLANT may replace the slicing.
LAUNCHER = """
import os, sys, torch
import train_gpt

PLANT, OUT, RANK = {plant!r}, {out!r}, int(os.environ["RANK"])
correct, seen = train_gpt.shard_batch, []


def shard(batch):
    if PLANT == "full":  # every rank trains on the whole global batch
        local = batch
    elif PLANT == "die" and RANK == 1 and len(seen) == 12:  # rank 1 dies in the middle of the run
        os._exit(3)
    elif PLANT == "overlap":  # B/2 rows per rank, but starting B/4 rows apart: rows shared, the last rows unused
        b = len(batch[0]) // 2
        local = tuple(t[RANK * b // 2 : RANK * b // 2 + b] for t in batch)
    else:
        local = correct(batch)
    seen.append(local[0].cpu())
    return local


train_gpt.shard_batch = shard
status = train_gpt.main(sys.argv[1:])
torch.save(seen, os.path.join(OUT, f"seen{{RANK}}.pt"))
sys.exit(status)
"""


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    """About 6 KB of made-up verse: enough for the tiny model, and independent of data/."""
    rng = random.Random(0)
    words = "the king queen my lord thou art not what shall we do to night fair sweet love death".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize() + "." for _ in range(220)]
    path = tmp_path_factory.mktemp("text") / "verse.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_process(text, tmp_path_factory) -> dict:
    """The reference: the whole global batch in one process (train_gpt.main in this process)."""
    path = tmp_path_factory.mktemp("one") / "state.pt"
    assert train_gpt.main([*TINY, "--data", str(text), "--checkpoint", str(path)]) == 0
    return torch.load(path, weights_only=True)


def global_batches(text: Path) -> list[torch.Tensor]:
    """The inputs x (B, T) of every step, drawn as train_gpt draws them (generator seeded with TrainConfig's seed 0)."""
    chars = text.read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(chars)
    train, _ = split_data(torch.tensor(tokenizer.encode(chars), dtype=torch.long))
    generator = torch.Generator().manual_seed(0)
    return [get_batch(train, BATCH, BLOCK, generator)[0] for _ in range(STEPS)]


def torchrun(
    text: Path, tmp_path: Path, plant: str | None = None, nproc: int = 2
) -> tuple[subprocess.CompletedProcess, dict, list]:
    """Train TINY on nproc processes: (the finished process, the checkpoint, per rank the list of its slices)."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(plant=plant, out=str(tmp_path)), encoding="utf-8")
    path = tmp_path / "state.pt"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        str(launcher),
    ]
    done = subprocess.run(
        [*command, *TINY, "--data", str(text), "--checkpoint", str(path)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = [torch.load(tmp_path / f"seen{r}.pt", weights_only=True) for r in range(nproc)]
    return done, torch.load(path, weights_only=True), seen


def relative_gap(a: list[float], b: list[float]) -> float:
    """Largest relative difference between two loss curves."""
    assert len(a) == len(b) == STEPS
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def slices_rebuild_batches(seen: list[list[torch.Tensor]], batches: list[torch.Tensor]) -> bool:
    """True when at every step rank 0's and rank 1's slices are equal halves that put together give the global batch."""
    return all(
        len(s0) == len(s1) == BATCH // 2 and torch.equal(torch.cat([s0, s1]), x)
        for s0, s1, x in zip(seen[0], seen[1], batches)
    )


# ---------------------------------------------------------------- the slice of a global batch


def test_slices_are_equal_disjoint_and_rebuild_the_global_batch():
    x = torch.arange(24).view(12, 2)  # (B, T) with B = 12
    y = x + 100
    for n in (1, 2, 3, 4, 6, 12):
        parts = [shard_batch((x, y), r, n) for r in range(n)]
        assert all(px.shape == (12 // n, 2) and py.shape == px.shape for px, py in parts)
        assert torch.equal(torch.cat([px for px, _ in parts]), x)  # in rank order, each row exactly once
        assert torch.equal(torch.cat([py for _, py in parts]), y)  # targets stay with their inputs


def test_a_global_batch_that_does_not_divide_is_refused():
    assert local_batch_size(12, 4) == 3
    with pytest.raises(ValueError, match="global batch size 10 does not divide by the number of processes 4"):
        local_batch_size(10, 4)
    with pytest.raises(ValueError, match="5 does not divide"):
        shard_batch((torch.zeros(5, 3),), 0, 2)


def test_cli_refuses_a_batch_that_does_not_divide_by_the_world_size(text, tmp_path, monkeypatch, capsys):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)  # as torchrun sets them: the check comes before any process group starts
    path = tmp_path / "state.pt"
    assert train_gpt.main([*TINY, "--batch-size", "5", "--data", str(text), "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the global batch size 5 does not divide by the number of processes 2")
    assert not path.exists() and not dist.is_initialized()


# ---------------------------------------------------------------- 2 processes = 1 process


def test_two_processes_take_the_same_steps_as_one(text, one_process, tmp_path):
    done, two, seen = torchrun(text, tmp_path)
    assert relative_gap(two["meta"]["losses"], one_process["meta"]["losses"]) < 1e-5
    for name, weight in one_process["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-4, atol=1e-5)
    assert slices_rebuild_batches(seen, global_batches(text))  # each rank trained on its own half, nothing else
    log_lines = [line for line in done.stdout.splitlines() if line.startswith("step ")]
    assert len(log_lines) == 3 and "global batch 8 = 2 x 4" in done.stdout  # steps 0, 3, 6, printed by rank 0 only
    assert two["meta"]["extra"]["world_size"] == 2 and len(two["meta"]["extra"]["rng_per_rank"]) == 2


def test_one_process_under_torchrun_takes_the_ddp_path_and_the_same_steps(text, one_process, tmp_path):
    done, one_ddp, seen = torchrun(text, tmp_path, nproc=1)
    assert "1 process(es) on cpu, gloo" in done.stdout  # the process group (and so DDP) is used even for one
    assert relative_gap(one_ddp["meta"]["losses"], one_process["meta"]["losses"]) < 1e-6
    assert all(torch.equal(s, x) for s, x in zip(seen[0], global_batches(text)))  # the whole batch, every step


@pytest.mark.parametrize("plant", ["overlap", "full"])
def test_planted_slicing_mistakes_are_caught(plant, text, one_process, tmp_path):
    _, two, seen = torchrun(text, tmp_path, plant=plant)
    gap = relative_gap(two["meta"]["losses"], one_process["meta"]["losses"])
    assert not slices_rebuild_batches(seen, global_batches(text))
    if plant == "overlap":  # rows trained twice, rows never seen: another gradient, so the loss test fails
        assert gap > 1e-3
    else:  # N copies of the full-batch gradient average to the same gradient: only the slice check sees the waste
        assert gap < 1e-5


# ---------------------------------------------------------------- resume, errors, interruption


@pytest.mark.parametrize("model", ["gpt", "modern"])
def test_resume_continues_exactly(text, tmp_path, model):
    common = [*TINY, "--model", model, "--dropout", "0.1", "--data", str(text)]  # dropout: the RNG state resumes too
    straight, split = tmp_path / "straight.pt", tmp_path / "split.pt"
    assert train_gpt.main([*common, "--checkpoint", str(straight)]) == 0
    assert train_gpt.main([*common, "--checkpoint", str(split), "--steps", "3"]) == 0
    assert torch.load(split, weights_only=True)["meta"]["step"] == 3
    assert train_gpt.main(["--checkpoint", str(split), "--resume"]) == 0
    a, b = torch.load(straight, weights_only=True), torch.load(split, weights_only=True)
    assert b["meta"]["step"] == STEPS and b["meta"]["losses"] == a["meta"]["losses"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["meta"]["extra"]["model"] == model
    assert any("linear3" in k for k in b["model"]) == (model == "modern")  # SwiGLU's third matrix


def test_cli_option_errors(text, tmp_path, capsys):
    path = tmp_path / "state.pt"
    base = [*TINY, "--data", str(text), "--checkpoint", str(path)]
    assert train_gpt.main([*base, "--d-model", "30", "--n-heads", "4"]) == 2
    assert capsys.readouterr().err == "error: d_model=30 must be divisible by n_heads=4\n"
    assert train_gpt.main([*base, "--block-size", "1000"]) == 2
    assert "too few for block size 1000" in capsys.readouterr().err
    assert train_gpt.main([*base, "--steps", "1"]) == 0 and path.exists()
    assert train_gpt.main(base) == 2  # a run never overwrites a checkpoint by accident
    assert "exists: pass --resume to continue that run or --overwrite" in capsys.readouterr().err
    assert train_gpt.main(["--checkpoint", str(path), "--resume", "--lr", "0.1"]) == 2
    assert "leave out --lr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        train_gpt.main([*base, "--lr", "-1"])
    assert exit_info.value.code == 2 and "argument --lr: must be a number > 0" in capsys.readouterr().err
    fresh = [*TINY, "--data", str(text), "--checkpoint", str(tmp_path / "other.pt")]
    assert train_gpt.main([*fresh, "--export", str(tmp_path)]) == 2  # refused before any training step
    assert capsys.readouterr().err == f"error: --export {tmp_path} is a directory; name a file\n"
    assert train_gpt.main([*fresh, "--export", str(tmp_path / "no" / "model.pt")]) == 2
    assert "in a folder that does not exist" in capsys.readouterr().err
    assert not (tmp_path / "other.pt").exists()


def test_cli_error_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "train_gpt.py", "--data", str(tmp_path / "missing.txt"), "--checkpoint", str(tmp_path / "s")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [f"error: --data {tmp_path / 'missing.txt'}: no such file"]


def test_sigterm_keeps_the_last_checkpoint(text, tmp_path):
    path = tmp_path / "state.pt"
    options = ["--max-steps", "100000", "--warmup-steps", "2", "--eval-interval", "20", "--eval-windows", "2"]
    command = [sys.executable, "train_gpt.py", *TINY[:10], "--batch-size", "2", *options]
    run = subprocess.Popen(
        [*command, "--data", str(text), "--checkpoint", str(path)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    time.sleep(0.5)  # a few more steps, perhaps another save
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 143 and "Traceback" not in err, err
    state = torch.load(path, weights_only=True)  # whole and loadable: the atomic save kept it
    assert state["meta"]["step"] % 20 == 0 and state["meta"]["step"] >= 20
    assert f"{path} keeps step {state['meta']['step']}" in err
    assert not list(tmp_path.glob("*.tmp"))


def test_when_one_process_dies_the_others_say_so_in_one_line(text, tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(plant="die", out=str(tmp_path)), encoding="utf-8")
    path = tmp_path / "state.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(launcher)]
    done = subprocess.run(
        [*command, *TINY, "--max-steps", "20", "--eval-interval", "5", "--data", str(text), "--checkpoint", str(path)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    lines = [line for line in output.splitlines() if "another process of this run stopped" in line]
    assert len(lines) == 1 and f"{path} keeps step 10 (--resume continues it)" in lines[0], output
    assert 'train_gpt.py", line' not in output  # no traceback through the course's code
