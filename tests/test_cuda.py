"""The CUDA paths: the same model on the GPU as on the CPU, training with bfloat16 autocast, Muon, and train_gpt.py
under torchrun with NCCL. Every test here needs a CUDA device and is skipped without one (the course never requires
a GPU); on a machine with one, run `pytest tests/test_cuda.py`.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_gpt
from helpers.course.trainer import Trainer
from helpers.models import GPT, GPTConfig
from helpers.modern import ModernGPT, ModernGPTConfig
from helpers.optim import make_muon_adamw
from helpers.training import TrainConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ROOT = Path(__file__).resolve().parent.parent
SIZES = dict(vocab_size=40, block_size=32, d_model=64, n_heads=4, n_layers=2, dropout=0.0)
TINY = [
    *("--n-layers", "2", "--d-model", "32", "--n-heads", "2", "--block-size", "16", "--dropout", "0"),
    *("--batch-size", "8", "--max-steps", "6", "--warmup-steps", "2", "--lr", "3e-3"),
    *("--eval-interval", "3", "--eval-windows", "8"),
]


@pytest.fixture(autouse=True)
def exact_float32():
    """Full float32 matrix products on the GPU (no TF32) so that CPU and CUDA agree closely."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def models():
    """(name, CPU model) pairs: the course's GPT and the modern GPT, each from-scratch and fused attention."""
    out = []
    for fused in (False, True):
        torch.manual_seed(0)
        out.append((f"gpt fused={fused}", GPT(GPTConfig(**SIZES, use_sdpa=fused))))
        torch.manual_seed(0)
        out.append((f"modern fused={fused}", ModernGPT(ModernGPTConfig.modern(**SIZES, use_sdpa=fused))))
    return out


@pytest.mark.parametrize("index", range(4))
def test_cuda_forward_and_gradients_equal_cpu(index):
    name, model = models()[index]
    idx = torch.randint(0, SIZES["vocab_size"], (3, SIZES["block_size"]), generator=torch.Generator().manual_seed(1))
    logits, loss = model(idx, idx)
    loss.backward()
    gpu = type(model)(model.cfg).cuda()  # a CUDA copy with the same weights and no gradients yet
    gpu.load_state_dict(model.state_dict())
    g_logits, g_loss = gpu(idx.cuda(), idx.cuda())
    g_loss.backward()
    torch.testing.assert_close(g_logits.cpu(), logits, atol=2e-5, rtol=1e-4, msg=name)
    for (pname, p), gp in zip(model.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(gp.grad.cpu(), p.grad, atol=1e-5, rtol=1e-3, msg=f"{name}: {pname}")


@pytest.mark.parametrize("modern", [False, True])
def test_training_on_cuda_with_amp_lowers_the_loss(modern):
    text = torch.arange(4000) % SIZES["vocab_size"]  # a repeating sequence: easy to learn
    torch.manual_seed(0)
    if modern:
        model = ModernGPT(ModernGPTConfig.modern(**SIZES, use_sdpa=True)).cuda()
        optimizer = make_muon_adamw(model, muon_lr=0.02, adamw_lr=3e-3)
    else:
        model, optimizer = GPT(GPTConfig(**SIZES, use_sdpa=True)).cuda(), None
    cfg = TrainConfig(max_steps=60, batch_size=16, lr=3e-3, warmup_steps=5, eval_interval=60, eval_windows=20, amp=True)
    trainer = Trainer(model, text[:3000], text[3000:], cfg, SIZES["block_size"], optimizer=optimizer)
    log = trainer.run()
    assert trainer.device.type == "cuda"
    assert log[-1]["val_loss"] < 0.5 * log[0]["val_loss"]


def test_torchrun_with_nccl_matches_one_process(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 200, encoding="utf-8")
    one, nccl = tmp_path / "one.pt", tmp_path / "nccl.pt"
    common = [*TINY, "--data", str(text), "--device", "cuda"]
    assert train_gpt.main([*common, "--checkpoint", str(one)]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train_gpt.py"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([*cmd, *common, "--checkpoint", str(nccl)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 process(es) on cuda, nccl" in run.stdout  # DDP over NCCL, even for one process
    a, b = (torch.load(p, weights_only=True) for p in (one, nccl))
    torch.testing.assert_close(
        torch.tensor(b["meta"]["losses"]), torch.tensor(a["meta"]["losses"]), rtol=1e-4, atol=1e-5
    )
