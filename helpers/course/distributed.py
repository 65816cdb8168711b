"""Training on several processes with torchrun and DistributedDataParallel (introduced in train_gpt.py, 06's model).

Every rank draws the same global batch of B sequences from an identically seeded generator and keeps its own
contiguous slice of b = B / N. Each rank's loss is the mean over its slice, and DDP averages the gradients, so

    (1/N) * sum_r mean(slice_r) = mean(global batch)       (the slices are equal in size and together the batch)

and N processes take the same optimiser steps as one process with the whole global batch.
Without torchrun (no WORLD_SIZE in the environment) everything here works for one process and needs no process group.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helpers.course.checkpoints import save_checkpoint
from helpers.course.utils import get_device
from helpers.decoding import model_device

BACKENDS = ("gloo", "nccl")  # gloo: CPU tensors (and CUDA ones, slowly); nccl: CUDA tensors only

# ---------------------------------------------------------------- where this process stands


def _env_int(name: str, default: int) -> int:
    """An integer environment variable that torchrun sets (default when it is absent)."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {text!r} (torchrun sets it)") from None


def world_size() -> int:
    """Number of processes in the job: the process group's size, else torchrun's $WORLD_SIZE, else 1."""
    return dist.get_world_size() if dist.is_initialized() else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's number, 0..world_size()-1: the process group's rank, else torchrun's $RANK, else 0."""
    return dist.get_rank() if dist.is_initialized() else _env_int("RANK", 0)


def local_rank() -> int:
    """This process's number on its own machine ($LOCAL_RANK, else 0); it picks the GPU."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0, the one process that prints and writes files."""
    return rank() == 0


# ---------------------------------------------------------------- the per-rank slice of a global batch


def local_batch_size(global_batch: int, n_ranks: int | None = None) -> int:
    """Sequences per rank: global_batch / n_ranks, or a ValueError when it does not divide evenly."""
    n_ranks = world_size() if n_ranks is None else n_ranks
    if global_batch < 1 or n_ranks < 1 or global_batch % n_ranks:
        raise ValueError(
            f"the global batch size {global_batch} does not divide by the number of processes {n_ranks}: "
            f"every process needs an equal slice (use a multiple of {n_ranks})"
        )
    return global_batch // n_ranks


def shard_batch(batch: tuple, at_rank: int | None = None, n_ranks: int | None = None) -> tuple:
    """This rank's contiguous slice of each tensor of a global batch: (B, ...) -> (B/N, ...), rows r*B/N onwards."""
    at_rank = rank() if at_rank is None else at_rank
    n_ranks = world_size() if n_ranks is None else n_ranks
    b = local_batch_size(len(batch[0]), n_ranks)
    return tuple(t[at_rank * b : (at_rank + 1) * b] for t in batch)  # equal, disjoint, in rank order


# ---------------------------------------------------------------- device, process group, model


def rank_device(choice: str | None = None) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK when the choice (helpers.course.utils.get_device) is CUDA, else it."""
    device, n_ranks = get_device(choice), world_size()
    if device.type == "mps" and n_ranks > 1:
        raise ValueError("several processes cannot share Apple's MPS device (no gloo or nccl support); use cpu")
    if device.type != "cuda":
        return device
    if device.index is not None and n_ranks > 1:
        raise ValueError(
            f"{choice!r} names one GPU, but each of the {n_ranks} processes takes cuda:LOCAL_RANK; use cuda"
        )
    index = local_rank() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"process {rank()} needs cuda:{index}, but this machine has {torch.cuda.device_count()} GPU(s)"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def check_backend(device: torch.device, backend: str | None = None) -> str:
    """The process-group backend for a device: the one asked for, else NCCL for CUDA and gloo otherwise."""
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"the nccl backend needs CUDA devices, not {device.type}; use gloo")
    return backend


def launched_by_torchrun() -> bool:
    """True in a process that torchrun started (it sets $MASTER_ADDR and $RANK), even a job of one process."""
    return "MASTER_ADDR" in os.environ and "RANK" in os.environ


def init(device: torch.device, backend: str | None = None) -> None:
    """Join torchrun's process group (its env:// rendezvous): under torchrun, even alone, so that a job of one
    process takes the same path (DDP, the backend's collectives) as a job of several."""
    if (launched_by_torchrun() or world_size() > 1) and not dist.is_initialized():
        backend = check_backend(device, backend)
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module) -> nn.Module:
    """The model for training steps: DDP around it when a process group is running, else the model itself.

    DDP copies rank 0's weights to every rank once, then averages the gradients during each backward pass.
    """
    if not dist.is_initialized():
        return model
    device = model_device(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# ---------------------------------------------------------------- collectives for logging, decisions and saving


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks, on every rank (a copy; the tensor itself in one process)."""
    if not dist.is_initialized():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return total / dist.get_world_size()


def with_global_value(loss: torch.Tensor) -> torch.Tensor:
    """The loss with the value of its mean over all ranks and the gradient of this rank's loss alone.

    Every rank then logs the loss of the whole global batch and agrees on whether it is finite, while DDP still
    averages the gradients of the local losses. In one process the loss itself.
    """
    if not dist.is_initialized():
        return loss
    local = loss.detach()
    return loss + (all_reduce_mean(local) - local)  # the added term is a constant: no gradient through it


def main_decides(flag: bool) -> bool:
    """Rank 0's value of a flag, on every rank (so that all ranks stop at the same step)."""
    if not dist.is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def gather_objects(obj) -> list:
    """Every rank's picklable obj, in rank order, on every rank ([obj] in one process)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def save_on_main(state: dict, path: Path | str) -> Path:
    """Rank 0 writes state atomically (helpers.course.checkpoints); every rank waits until the file is in place."""
    if is_main():
        save_checkpoint(state, path)
    if dist.is_initialized():
        dist.barrier()
    return Path(path)


def rng_state(device: torch.device) -> dict:
    """This process's random-number state: the CPU generator's, and the GPU's when training on CUDA (dropout)."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore a state from rng_state (the GPU part only when training on CUDA again)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
