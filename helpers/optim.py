"""Optimisers and the learning-rate schedule: AdamW's groups, warm-up + cosine, and Muon (06_char_gpt, 11_modern_gpt).

- make_adamw: AdamW with weight decay on weight matrices only (06);
- warmup_cosine and make_scheduler: the learning-rate multiplier of every training in the course;
- newton_schulz, Muon, make_muon_adamw: orthogonalised updates for the blocks' matrices, AdamW for the rest (11).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

# ---------------------------------------------------------------- AdamW and the schedule (06_char_gpt)


def make_adamw(model: nn.Module, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: no decay on biases, norms or embeddings."""
    no_decay_ids = set()  # a weight shared by an embedding and a linear layer (tied LM head) counts as embedding
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not (name == "weight" and isinstance(module, nn.Linear)):
                no_decay_ids.add(id(param))
    decay, no_decay = [], []
    for param in model.parameters():  # each shared parameter once
        if param.requires_grad:
            (no_decay if id(param) in no_decay_ids else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to min_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine from cfg (a TrainConfig), as a scheduler that scales each parameter group's learning rate."""
    schedule = partial(
        warmup_cosine, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, min_ratio=cfg.min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ---------------------------------------------------------------- Muon (Jordan et al. 2024)

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # (a, b, c) of the quintic p(s) = a s + b s^3 + c s^5 (Jordan 2024)


def newton_schulz(
    G: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Orthogonalise G (..., m, n) approximately: keep its singular vectors, push its singular values towards 1.

    With G = U S V^T, X_0 = G / ||G||_F has singular values in (0, 1]; each step
        X <- a X + b (X X^T) X + c (X X^T)^2 X = U p(S) V^T,   p(s) = a s + b s^3 + c s^5,
    so the result is U p(p(...p(S / ||G||_F))) V^T, close to the polar factor U V^T. p'(0) = a = 3.4 lifts small
    singular values fast; the price is that they end in a band around 1, not at 1 (0.68-1.14 after 5 steps for random
    rectangular matrices; a nearly singular matrix keeps its tiniest singular values small).
    Computed in `dtype` (float32; bfloat16 is the fast choice on a GPU), returned in G's dtype. Scale invariant.
    """
    if G.dim() < 2:
        raise ValueError(f"newton_schulz orthogonalises matrices (..., m, n), got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT  # work on the wide side, so that X X^T is the smaller Gram matrix
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT  # (m, n) @ (n, m) -> (m, m), m <= n
        X = a * X + (b * A + c * A @ A) @ X  # (m, m) @ (m, n) -> (m, n)
    return (X.mT if tall else X).to(G.dtype)


def _closure_loss(closure) -> torch.Tensor | None:
    """The loss of an optimiser step's closure (it re-evaluates the model, with gradients on), or None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Muon(torch.optim.Optimizer):
    """Momentum whose update of each weight matrix is orthogonalised by newton_schulz; for 2-D hidden weights only.

    For a weight W (rows, cols) with gradient G, momentum mu, learning rate lr and weight decay wd:
        B <- mu B + G                                   the momentum buffer
        U = G + mu B (Nesterov) or U = B                the direction
        W <- W (1 - lr wd) - lr sqrt(max(1, rows / cols)) newton_schulz(U)
    All singular values of the update are near 1, so the step is about as large along every direction the gradient
    spans, rare directions included; sqrt(max(1, rows / cols)) gives tall and wide matrices updates of alike RMS.
    Embeddings, the LM head, gains and biases belong to AdamW (make_muon_adamw).
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.float32,
    ):
        if lr < 0 or weight_decay < 0 or not 0.0 <= momentum < 1.0 or ns_steps < 1:
            raise ValueError(
                f"Muon needs lr >= 0, weight_decay >= 0, momentum in [0, 1) and ns_steps >= 1, got lr={lr}, "
                f"weight_decay={weight_decay}, momentum={momentum}, ns_steps={ns_steps}"
            )
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps, ns_dtype=ns_dtype
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(
                        f"Muon updates 2-D weight matrices only, not a parameter of shape {tuple(p.shape)}"
                    )

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; return closure()'s loss when a closure is given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            by_shape: dict[tuple[int, int], list] = {}  # matrices of one shape are orthogonalised in one batch
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(mu).add_(p.grad)
                direction = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
                by_shape.setdefault(tuple(p.shape), []).append((p, direction))
            for (rows, cols), pairs in by_shape.items():
                # (n, rows, cols): one batched matrix product per Newton-Schulz step instead of n small ones
                updates = newton_schulz(torch.stack([d for _, d in pairs]), group["ns_steps"], dtype=group["ns_dtype"])
                for (p, _), update in zip(pairs, updates):
                    p.mul_(1.0 - lr * wd)
                    p.add_(update, alpha=-lr * max(1.0, rows / cols) ** 0.5)
        return loss


class CombinedOptimizer(torch.optim.Optimizer):
    """Several optimisers over disjoint parameters, seen as one: one step, one zero_grad, one state_dict.

    param_groups lists the groups of all of them (the same dicts), so a scheduler such as
    make_scheduler scales every group's learning rate, each from its own peak.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        super().__init__([g for opt in self.optimizers for g in opt.param_groups], {})  # raises on a shared parameter

    def step(self, closure=None):
        """Evaluate closure once (if given), then step every optimiser; return the closure's loss."""
        loss = _closure_loss(closure)
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every optimiser's parameters."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """{"optimizers": [each optimiser's state_dict]}: tensors and plain values (torch.load(weights_only=True))."""
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore every optimiser, then list their groups again (loading replaces the group dicts)."""
        saved = state_dict["optimizers"]
        if len(saved) != len(self.optimizers):
            raise ValueError(f"the state holds {len(saved)} optimisers, this CombinedOptimizer {len(self.optimizers)}")
        for opt, state in zip(self.optimizers, saved):
            opt.load_state_dict(state)
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]


def make_muon_adamw(
    model: nn.Module,
    muon_lr: float,
    adamw_lr: float,
    weight_decay: float = 0.1,
    betas=(0.9, 0.95),
    ns_dtype: torch.dtype | str = torch.float32,
) -> CombinedOptimizer:
    """Muon for the 2-D weight matrices inside model.blocks, AdamW for the rest (embeddings, LM head, norms, biases).

    Weight decay goes where make_adamw puts it: on weight matrices (Muon's, and an untied LM head under AdamW), never
    on embeddings, gains or biases. The result drives helpers.training's train_step and train, and make_scheduler;
    its param_groups are [Muon's, AdamW with decay, AdamW without]. ns_dtype is the dtype of Muon's Newton-Schulz
    iterations (a torch.dtype or its name, "bfloat16" for example: 2.5 times faster on a CPU with bfloat16 units).
    """
    if isinstance(ns_dtype, str):
        if not isinstance(getattr(torch, ns_dtype, None), torch.dtype):
            raise ValueError(f"ns_dtype must name a torch dtype such as 'bfloat16', got {ns_dtype!r}")
        ns_dtype = getattr(torch, ns_dtype)
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Module):
        raise ValueError(f"make_muon_adamw needs a model with a `blocks` module (GPT, ModernGPT), got {type(model)}")
    hidden = [p for p in blocks.parameters() if p.dim() == 2 and p.requires_grad]
    hidden_ids = {id(p) for p in hidden}
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hidden_ids]  # shared ones once
    decay = [p for p in rest if p.dim() == 2 and id(p) not in embedding_ids]
    no_decay = [p for p in rest if p.dim() != 2 or id(p) in embedding_ids]
    muon = Muon(hidden, lr=muon_lr, weight_decay=weight_decay, ns_dtype=ns_dtype)
    adamw = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=adamw_lr,
        betas=betas,
    )
    return CombinedOptimizer([muon, adamw])
