"""Tables, figures and recorded metrics of notebook 08 (introduced in 08_translation).

The notebook keeps what it teaches (tokenizing, training, decoding, scoring); this module holds the bookkeeping
around it: the tables it prints, the figures it saves, the metrics it records and the checkpoints it looks up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from helpers.bpe import BPETokenizer
from helpers.course.metrics import MetricRecorder
from helpers.course.plotting import add_weight_colorbar, plot_attention
from helpers.course.translator import SubwordTranslator, Translator
from helpers.course.utils import relative
from helpers.tokenizers import UNK_ID, Vocab

# ---------------------------------------------------------------- section 3: how long BPE makes a sentence


def tokenization_rows(
    language: str,
    train_text: list[str],
    test_text: list[str],
    word_tok: Callable[[str], list[str]],
    vocab: Vocab,
    bpe_sizes: Sequence[int],
) -> list[dict]:
    """Return rows of tokens per test sentence in characters, in words and in BPE trained at each size."""
    n = len(test_text)
    unseen = sum(any(t not in vocab.stoi for t in word_tok(s)) for s in test_text) / n
    rows = [
        {
            "language": language,
            "tokens": "characters",
            "size": None,
            "tokens per sentence": sum(map(len, test_text)) / n,
            "test sentences with <unk>": 0.0,
        },
        {
            "language": language,
            "tokens": "words",
            "size": len(vocab),
            "tokens per sentence": sum(len(word_tok(s)) for s in test_text) / n,
            "test sentences with <unk>": unseen,
        },
    ]
    for size in bpe_sizes:
        bpe = BPETokenizer.train(train_text, size)
        rows.append(
            {
                "language": language,
                "tokens": "BPE",
                "size": len(bpe),
                "tokens per sentence": sum(len(bpe.encode(s)) for s in test_text) / n,
                "test sentences with <unk>": 0.0,
            }
        )
    return rows


def plot_bpe_lengths(lengths: pd.DataFrame, languages: Sequence[str] = ("English", "French")) -> plt.Figure:
    """Draw tokens per sentence against the BPE vocabulary size, with characters and words as lines, per language."""
    fig, axes = plt.subplots(1, len(languages), figsize=(12, 3.8), layout="constrained", squeeze=False)
    for ax, lang in zip(axes[0], languages):
        sub = lengths[lengths.language == lang]
        bpe_rows = sub[sub.tokens == "BPE"]
        ax.plot(bpe_rows["size"], bpe_rows["tokens per sentence"], "o-", label="BPE (vocabulary size reached)")
        for kind, style in (("characters", ":"), ("words", "--")):
            row = sub[sub.tokens == kind].iloc[0]
            label = kind
            if kind == "words":
                unk = row["test sentences with <unk>"]
                label = f"words ({int(row['size']):,} types, {unk:.0%} of test sentences with <unk>)"
            ax.axhline(row["tokens per sentence"], color="grey", ls=style, label=label)
        ax.set(
            xscale="log", title=f"{lang} test sentences", xlabel="vocabulary size", ylabel="tokens per sentence (mean)"
        )
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------- sections 5-6: training runs and their checkpoints


def record_synthetic_accuracy(recorder: MetricRecorder, accuracy: float, n_sequences: int) -> float:
    """Record the share of random sequences that the reverse-task model reversed exactly."""
    return recorder.record(
        "translation.synthetic_sequence_accuracy",
        accuracy,
        "fraction",
        f"reverse task: share of {n_sequences} random sequences reversed exactly (greedy)",
    )


def saved_translator(ckpt_path: Path, kind: str, device: torch.device | str | None = None) -> Translator | None:
    """Return the translator of this kind ("word" or "subword") saved by an earlier full run, or None."""
    for path in (ckpt_path, ckpt_path.with_name(f"translation_{kind}.pt")):
        if path.exists():
            found = Translator.load(path, device)
            if isinstance(found, SubwordTranslator) == (kind == "subword"):
                return found
    return None


def subword_model_summary(subword: SubwordTranslator) -> str:
    """Say which BPE vocabulary the subword model reads, how it treats case, and how many parameters it has."""
    case = "| lower-cased, re-cased by words" if subword.truecaser is not None else "| case kept"
    return f"{subword.src_bpe} {case}\n{sum(p.numel() for p in subword.model.parameters()):,} parameters"


def training_summary(history: dict, reused: str | None = None, weights: bool = False) -> str:
    """Say how long training took (or which saved model was reused) and, with weights=True, which weights were kept."""
    if reused is not None:
        lines = [f"reusing the saved {reused} (trained in {history['train_seconds']:.0f} s)"]
    else:
        lines = [
            f"trained {history['steps']} steps in {history['train_seconds']:.0f} s "
            f"({history['wall_seconds']:.0f} s with the validation decoding)"
        ]
    if weights:
        lines.append(pd.Series(history["weight_choice"], name="valid BLEU (greedy)").round(2).to_string())
        lines.append(f"kept: {history['weights']}")
    return "\n".join(lines)


def checkpoint_extra(decoding: dict, history: dict, data_source: str | Path, split_seed: int) -> dict:
    """Return what a saved translator keeps beside its weights: the chosen decoding, the history, the data."""
    kept = ("steps", "loss", "evals", "train_seconds", "weights", "weight_choice")
    return {
        "decoding": decoding,
        "history": {k: history[k] for k in kept},
        "data_source": str(data_source),
        "split_seed": split_seed,
    }


def save_translators(translators: dict[str, Translator], default_kind: str, ckpt_path: Path) -> Path:
    """Save the default kind's translator at ckpt_path and the other beside it as translation_<kind>.pt."""
    other_kind = next(kind for kind in translators if kind != default_kind)
    translators[default_kind].save(ckpt_path)
    translators[other_kind].save(ckpt_path.with_name(f"translation_{other_kind}.pt"))
    size = ckpt_path.stat().st_size / 1e6
    print(f"saved {relative(ckpt_path)} ({default_kind}, {size:.1f} MB) and translation_{other_kind}.pt beside it")
    return ckpt_path


# ---------------------------------------------------------------- section 9: test scores


def record_test_scores(
    recorder: MetricRecorder, results: dict[str, dict], names: dict[str, str], decoding: dict, train_seconds: float
) -> None:
    """Record the word model's test BLEU and chrF, the trivial baseline's BLEU and the training time."""
    best, baseline, unk = names["best"], names["baseline"], decoding["unk"]
    beam = f"beam {decoding['beam']}, alpha {decoding['alpha']}"
    for name, value, unit, what in [
        (
            "translation.bleu_greedy",
            results[names["greedy"]]["bleu"],
            "BLEU",
            f"test split, sacreBLEU 13a, multi-reference, greedy, <unk> rule {unk}",
        ),
        ("translation.bleu_beam", results[names["beam"]]["bleu"], "BLEU", f"test split, {beam}, <unk> rule {unk}"),
        ("translation.bleu_test", results[best]["bleu"], "BLEU", f"test split, best decoding: {best}"),
        ("translation.chrf_test", results[best]["chrf"], "chrF", f"test split, {best}"),
        ("translation.bleu_baseline", results[baseline]["bleu"], "BLEU", f"test split, trivial baseline: {baseline}"),
        (
            "translation.train_seconds",
            train_seconds,
            "s",
            "training time of the translation model (without validation decoding)",
        ),
    ]:
        recorder.record(name, value, unit, what)


# ---------------------------------------------------------------- sections 10-11: attention maps, label smoothing


def plot_mean_attention(
    maps: list[tuple[torch.Tensor, list[str], list[str]]], titles: list[str], suptitle: str
) -> plt.Figure:
    """Draw each (H, T, S) map of (weights, output labels, source labels), averaged over heads, side by side."""
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps) + 1, 4), layout="constrained", squeeze=False)
    for ax, (weights, out_labels, src_labels), title in zip(axes[0], maps, titles):
        plot_attention(weights.mean(0), out_labels, src_labels, title, ax=ax, cbar=False)
    add_weight_colorbar(fig, axes[0])
    fig.suptitle(suptitle)
    return fig


def plot_label_smoothing(
    target: torch.Tensor, gold: int, vocab: Vocab, top_probs: torch.Tensor, peak: float, eps: float
) -> plt.Figure:
    """Draw the smoothed target of one word beside a histogram of the model's top next-word probabilities."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    shown = [gold] + [i for i in range(4, 13) if i != gold][:9]
    axes[0].bar(range(len(shown)), target[shown].numpy(), color=["C1"] + ["C0"] * (len(shown) - 1))
    axes[0].set_yscale("log")
    axes[0].set_xticks(range(len(shown)), vocab.decode(shown), rotation=45)
    axes[0].set(
        title=f"Smoothed target for the reference word {vocab.itos[gold]!r} (ε = {eps})",
        ylabel="target probability (log scale)",
    )
    axes[1].hist(top_probs.cpu().numpy(), bins=40, color="C0")
    axes[1].axvline(peak, color="k", ls="--", label=f"target peak {peak:.3f}")
    axes[1].set(
        title="Trained model, teacher-forced on the test split",
        xlabel="probability of its most likely next word",
        ylabel="positions",
    )
    axes[1].legend()
    return fig


def teacher_forcing_summary(top_p: torch.Tensor, correct: torch.Tensor, real: torch.Tensor, peak: float) -> str:
    """Say how often the teacher-forced model's top word is right and how often it is surer than the target's peak."""
    n_real = real.sum().item()
    accuracy = correct.sum().item() / n_real
    confident = (top_p[real] > peak).float().mean().item()
    return (
        f"teacher-forced next-word accuracy on the test split: {accuracy:.1%} of {n_real} positions\n"
        f"positions where the model gives its top word more than the target's peak: {confident:.1%}; "
        f"median top probability {top_p[real].median():.3f}"
    )


# ---------------------------------------------------------------- section 12: words against subwords


def grid_bleu(grid: pd.DataFrame, decoding: dict, column: str) -> float:
    """Return the validation BLEU in `column` of the grid row of this decoding's beam width and alpha."""
    return float(grid[(grid.beam == decoding["beam"]) & (grid.alpha == decoding["alpha"])][column].iloc[0])


def model_column(
    translator: Translator,
    history: dict,
    test_en: list[str],
    scores: dict[str, dict],
    grid: pd.DataFrame,
    decoding: dict,
    grid_column: str,
) -> dict[str, float]:
    """Return one model's column of the words-against-subwords table (scores: sacreBLEU's "greedy" and "beam")."""
    # the validation BLEU comes from the grid row of the chosen decoding; beam ids count <unk> before any rule
    n = len(test_en)
    beam_ids = translator.decode_ids(test_en, beam=decoding["beam"], alpha=decoding["alpha"])
    return {
        "valid BLEU, chosen decoding": grid_bleu(grid, decoding, grid_column),
        "test BLEU, greedy": scores["greedy"]["bleu"],
        "test BLEU, beam": scores["beam"]["bleu"],
        "test chrF, beam": scores["beam"]["chrf"],
        "test sentences with an unknown source token": sum(UNK_ID in translator.source_ids(s) for s in test_en) / n,
        "beam outputs with <unk> before the rule": sum(UNK_ID in ids for ids in beam_ids) / n,
        "tokens per test sentence (English)": sum(len(translator.source_ids(s)) - 1 for s in test_en) / n,
        "parameters": sum(p.numel() for p in translator.model.parameters()),
        "training steps": history["steps"],
        "training seconds": history["train_seconds"],
    }


def record_subword_comparison(
    recorder: MetricRecorder, side: pd.DataFrame, bpe_size: int, subword_decoding: dict
) -> None:
    """Record the subword model's test and validation figures and the word model's validation BLEU."""
    sub, beam = side["subwords (BPE)"], f"beam {subword_decoding['beam']}, alpha {subword_decoding['alpha']}"
    for name, value, unit, what in [
        (
            "translation.bpe_bleu_greedy",
            sub["test BLEU, greedy"],
            "BLEU",
            f"subword model (shared BPE, {bpe_size} tokens), test split, greedy",
        ),
        ("translation.bpe_bleu_beam", sub["test BLEU, beam"], "BLEU", f"subword model, test split, {beam}"),
        ("translation.bpe_chrf_test", sub["test chrF, beam"], "chrF", "subword model, test split, beam"),
        (
            "translation.bpe_valid_bleu",
            sub["valid BLEU, chosen decoding"],
            "BLEU",
            "subword model, validation split, chosen decoding",
        ),
        (
            "translation.word_valid_bleu",
            side["words"]["valid BLEU, chosen decoding"],
            "BLEU",
            "word-level model, validation split, chosen decoding and <unk> rule",
        ),
        (
            "translation.bpe_train_seconds",
            sub["training seconds"],
            "s",
            "training time of the subword model (without validation decoding)",
        ),
        (
            "translation.bpe_unk_outputs",
            sub["beam outputs with <unk> before the rule"],
            "fraction",
            "subword model: test beam outputs holding an <unk> id",
        ),
    ]:
        recorder.record(name, value, unit, what)


# ---------------------------------------------------------------- section 14: closing note


def closing_figures(
    results: dict[str, dict],
    names: dict[str, str],
    decoding: dict,
    history: dict,
    side: pd.DataFrame,
    default_kind: str,
    *,
    syn_acc: float,
    syn_steps: int,
    device: torch.device,
    mode: str,
    n_streams: int,
    bpe_size: int,
) -> str:
    """Return the closing note's Markdown list of this run's figures."""
    base = results[names["baseline"]]["bleu"]
    where = "the CPU" if device.type == "cpu" else f"the {device.type.upper()} device"
    best_name = names["best"]
    best = results[best_name]
    bleu_greedy, bleu_beam = results[names["greedy"]]["bleu"], results[names["beam"]]["bleu"]
    sub, words = side["subwords (BPE)"], side["words"]
    return "\n".join(
        [
            f"- Synthetic reverse task: {syn_acc:.1%} of new sequences reversed exactly after {syn_steps} steps.",
            f"- Training: {history['steps']} steps in {history['train_seconds']:.0f} s on {where} ({mode} mode), "
            f"weights kept: {history['weights']}.",
            f"- Test BLEU (sacreBLEU, 13a, {n_streams} reference streams): greedy {bleu_greedy:.1f}, "
            f"beam {bleu_beam:.1f}; best **{best['bleu']:.1f}** ({best_name}), chrF {best['chrf']:.1f}.",
            f"- Trivial baseline ({names['baseline']}): {base:.1f} BLEU; "
            f"the model scores {best['bleu'] - base:+.1f} BLEU against it.",
            f"- The `<unk>` rule {decoding['unk']!r} changes greedy test BLEU by "
            f"{bleu_greedy - results[names['keep']]['bleu']:+.1f} compared with keeping `<unk>`.",
            f"- Beam search minus greedy on test: {bleu_beam - bleu_greedy:+.1f} BLEU.",
            f"- Subword model (one BPE vocabulary of {bpe_size:,} tokens): test BLEU greedy "
            f"{sub['test BLEU, greedy']:.1f}, beam {sub['test BLEU, beam']:.1f}, chrF {sub['test chrF, beam']:.1f}, "
            f"no `<unk>` in any output; validation BLEU {sub['valid BLEU, chosen decoding']:.1f} against "
            f"{words['valid BLEU, chosen decoding']:.1f} for words, "
            f"so `translation.pt` holds the {default_kind} model.",
        ]
    )
