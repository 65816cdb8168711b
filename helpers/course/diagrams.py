"""Block diagrams of the encoder and decoder blocks drawn with matplotlib (introduced in 05_transformer_block)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

COLORS = {"attention": "#cfe2f3", "ffn": "#fce5cd", "norm": "#fff2cc"}
BOX_W, BOX_H, STEP, CX, R = 4.8, 0.85, 1.3, 5.0, 0.28  # box size, vertical step, centre line, radius of a "+"
ENCODER_SUBLAYERS = [("Multi-head self-attention", "attention", None), ("Feed-forward (GELU)", "ffn", None)]
DECODER_SUBLAYERS = [
    ("Masked multi-head\nself-attention (causal)", "attention", None),
    ("Multi-head\ncross-attention", "attention", "keys and values from\nthe encoder output\n(memory, B×S×C)"),
    ("Feed-forward (GELU)", "ffn", None),
]


def _nodes(sublayers, norm_first: bool) -> list[dict]:
    """List the diagram's nodes from bottom to top: Pre-LN is LN -> f -> +, Post-LN is f -> + -> LN."""
    nodes = []
    for group, (label, kind, side) in enumerate(sublayers):
        norm = {"kind": "box", "label": "LayerNorm", "color": COLORS["norm"], "side": None, "group": group}
        body = {"kind": "box", "label": label, "color": COLORS[kind], "side": side, "group": group}
        add = {"kind": "add", "label": "+", "group": group}
        nodes += [norm, body, add] if norm_first else [body, add, norm]
    return nodes


def _half_height(node: dict) -> float:
    """Half the drawn height of a node, so arrows start and stop at its edge."""
    return {"box": BOX_H / 2, "add": R, "text": 0.22}[node["kind"]]


def draw_residual_block(sublayers, norm_first: bool, title: str, input_label: str, output_label: str, ax=None):
    """Draw sublayers wrapped in residual connections and LayerNorms, bottom to top; return the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 1.0 + 0.75 * (3 * len(sublayers) + 2)))
    nodes = (
        [{"kind": "text", "label": input_label}]
        + _nodes(sublayers, norm_first)
        + [{"kind": "text", "label": output_label}]
    )
    for i, node in enumerate(nodes):
        node["y"] = 0.5 + STEP * i
    for node in nodes:
        if node["kind"] == "text":
            ax.text(CX, node["y"], node["label"], ha="center", va="center", fontsize=10, style="italic")
        elif node["kind"] == "add":
            ax.add_patch(Circle((CX, node["y"]), R, facecolor="white", edgecolor="black", lw=1.2))
            ax.text(CX, node["y"], "+", ha="center", va="center", fontsize=13, weight="bold")
        else:
            ax.add_patch(
                FancyBboxPatch(
                    (CX - BOX_W / 2, node["y"] - BOX_H / 2),
                    BOX_W,
                    BOX_H,
                    boxstyle="round,pad=0.02,rounding_size=0.15",
                    facecolor=node["color"],
                    edgecolor="black",
                    lw=1.2,
                )
            )
            ax.text(CX, node["y"], node["label"], ha="center", va="center", fontsize=9.5, linespacing=1.1)
    arrow = dict(arrowstyle="-|>", color="black", lw=1.2, shrinkA=0, shrinkB=0)
    for below, above in zip(nodes, nodes[1:]):
        ax.annotate(
            "",
            xy=(CX, above["y"] - _half_height(above)),
            xytext=(CX, below["y"] + _half_height(below)),
            arrowprops=arrow,
        )
    skip_x = CX - BOX_W / 2 - 0.6
    for group in range(len(sublayers)):
        members = [n for n in nodes if n.get("group") == group]
        start = members[0]["y"] - STEP / 2  # the stream just before the sublayer group
        add_y = next(n["y"] for n in members if n["kind"] == "add")
        ax.plot([CX, skip_x, skip_x], [start, start, add_y], color="#3d85c6", lw=1.6)
        ax.plot([CX], [start], marker="o", color="#3d85c6", ms=4)
        ax.annotate("", xy=(CX - R, add_y), xytext=(skip_x, add_y), arrowprops={**arrow, "color": "#3d85c6", "lw": 1.6})
        ax.text(
            skip_x - 0.15,
            (start + add_y) / 2,
            "residual",
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
            color="#3d85c6",
        )
    for node in nodes:
        if node.get("side"):
            ax.text(CX + BOX_W / 2 + 1.45, node["y"], node["side"], ha="left", va="center", fontsize=8.5)
            ax.annotate("", xy=(CX + BOX_W / 2, node["y"]), xytext=(CX + BOX_W / 2 + 1.3, node["y"]), arrowprops=arrow)
    top, bottom = nodes[-1]["y"] - STEP / 2 + 0.1, nodes[0]["y"] + 0.35
    ax.add_patch(
        Rectangle(
            (skip_x - 0.75, bottom),
            CX + BOX_W / 2 + 0.3 - (skip_x - 0.75),
            top - bottom,
            fill=False,
            ls="--",
            lw=1.0,
            edgecolor="grey",
        )
    )
    ax.text(CX + BOX_W / 2 + 0.45, top - 0.25, "× N", ha="left", va="top", fontsize=11, color="grey")
    ax.set_xlim(0.3, 12.2 if any(n.get("side") for n in nodes) else 9.0)
    ax.set_ylim(0, nodes[-1]["y"] + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    return ax


def draw_encoder_block(norm_first: bool = True, ax=None):
    """Draw the encoder block: self-attention then feed-forward, each with a residual connection and LayerNorm."""
    name = "Pre-LN" if norm_first else "Post-LN"
    return draw_residual_block(
        ENCODER_SUBLAYERS,
        norm_first,
        f"Encoder block ({name})",
        "input x (B, T, C)",
        "output (B, T, C) to the next block",
        ax=ax,
    )


def draw_decoder_block(norm_first: bool = True, ax=None):
    """Draw the decoder block: masked self-attention, cross-attention to the encoder output, then feed-forward."""
    name = "Pre-LN" if norm_first else "Post-LN"
    return draw_residual_block(
        DECODER_SUBLAYERS,
        norm_first,
        f"Decoder block ({name})",
        "target x (B, T, C)",
        "output (B, T, C) to the next block",
        ax=ax,
    )
