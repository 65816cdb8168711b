"""One char-GPT tuning run; prints one line per minute of training.

    python scripts/tune_char_gpt.py '{"model": {"d_model": 192, ...}, "train": {"batch_size": 16, ...}}'

It starts from the defaults of GPTConfig and TrainConfig (not from notebook 06's settings), with the speed-ups of
06's full run switched on (amp, flush_denormal, fast_dropout), evaluations once a minute, and the JSON overrides.
Optional keys: "modern" (switches of helpers.modern.ModernGPTConfig, e.g. {"norm": "rmsnorm"}, or "all" for every
post-2019 change), "muon" (keyword arguments of helpers.optim.make_muon_adamw: Muon for the block matrices,
AdamW for the rest) and "threads" (PyTorch CPU threads).
The logs in artifacts/tuning/ are the runs that chose notebook 06's full settings (see its README.md).
"""

import json
import sys
import time

import torch

from helpers.course.datasets import load_dataset
from helpers.course.runs import build_char_gpt, describe_device
from helpers.course.trainer import Trainer
from helpers.optim import make_muon_adamw
from helpers.training import TrainConfig

spec = json.loads(sys.argv[1])
seed = spec["train"].pop("seed", 0)  # initialisation, batches and dropout
if "threads" in spec:
    torch.set_num_threads(spec["threads"])
ds = load_dataset()
model = build_char_gpt(spec["model"], ds.tokenizer.vocab_size, spec.get("modern"), seed)
optimizer = make_muon_adamw(model, **spec["muon"]) if "muon" in spec else None
print(f"params {model.num_params():,}", flush=True)
print("provenance", json.dumps(describe_device(torch.device("cpu"))), flush=True)  # commit, machine, torch, command
cfg = TrainConfig(
    amp=True,
    flush_denormal=True,
    fast_dropout=True,
    eval_interval=100_000,
    eval_at_seconds=list(range(60, 601, 60)),
    seed=seed,
    **spec["train"],
)
trainer = Trainer(model, ds.train, ds.val, cfg, model.cfg.block_size, optimizer=optimizer)
t0 = time.time()
trainer.run()
print("wall", time.time() - t0, "steps", trainer.step, "train_s", trainer.train_seconds, flush=True)
