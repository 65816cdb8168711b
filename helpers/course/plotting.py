"""One place for figures: attention heatmaps and saving under artifacts/ (introduced in 01_attention_by_hand)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
import torch

from helpers.course.utils import artifacts_dir


def save_figure(fig: plt.Figure, name: str, mode: str = "full") -> Path:
    """Save a figure as artifacts[/quick]/figures/<name>.png and return the path."""
    path = artifacts_dir(mode) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def plot_attention(
    weights, query_labels, key_labels, title: str, ax=None, annotate: bool | None = None, cbar: bool = True
):
    """Draw a (T_q, T_k) attention matrix as a labelled heatmap: rows are queries, columns are keys."""
    weights = torch.as_tensor(weights).detach().float().cpu()
    if weights.dim() != 2:
        raise ValueError(f"plot_attention expects a (T_q, T_k) matrix, got shape {tuple(weights.shape)}")
    if weights.shape != (len(query_labels), len(key_labels)):
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not match {len(query_labels)} query labels "
            f"and {len(key_labels)} key labels"
        )
    if ax is None:
        size = max(3.0, 0.45 * len(key_labels) + 1.5)
        _, ax = plt.subplots(figsize=(size, max(2.5, 0.4 * len(query_labels) + 1.0)))
    annotate = len(key_labels) <= 10 if annotate is None else annotate
    sns.heatmap(
        weights.numpy(),
        ax=ax,
        vmin=0.0,
        vmax=1.0,
        cmap="viridis",
        square=False,
        cbar=cbar,
        annot=annotate,
        fmt=".2f",
        annot_kws={"size": 7},
        xticklabels=list(key_labels),
        yticklabels=list(query_labels),
    )
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(axis="y", labelrotation=0)
    return ax


def plot_attention_heads(weights, query_labels, key_labels, title: str, ncols: int = 4, annotate: bool = False):
    """Draw per-head heatmaps from weights of shape (H, T_q, T_k) in a grid with one shared colour bar."""
    weights = torch.as_tensor(weights).detach()
    if weights.dim() != 3:
        raise ValueError(f"plot_attention_heads expects (H, T_q, T_k), got shape {tuple(weights.shape)}")
    n_heads = weights.shape[0]
    ncols = min(ncols, n_heads)
    nrows = (n_heads + ncols - 1) // ncols
    side = max(2.8, 0.22 * len(key_labels) + 1.4)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(side * ncols + 0.8, side * nrows * 0.9), squeeze=False, layout="constrained"
    )
    labelsize = 10 if len(key_labels) > 12 else 9
    for h in range(nrows * ncols):
        ax = axes[h // ncols][h % ncols]
        if h < n_heads:
            plot_attention(weights[h], query_labels, key_labels, f"head {h}", ax=ax, annotate=annotate, cbar=False)
            ax.tick_params(labelsize=labelsize)
        else:
            ax.axis("off")
    add_weight_colorbar(fig, axes)
    fig.suptitle(title)
    return fig


def add_weight_colorbar(fig: plt.Figure, axes) -> None:
    """Add one colour bar for attention weights (0 to 1, viridis) beside a grid of heatmaps drawn with cbar=False."""
    mappable = plt.cm.ScalarMappable(norm=plt.Normalize(0.0, 1.0), cmap="viridis")
    fig.colorbar(mappable, ax=axes, label="attention weight", shrink=0.8)
