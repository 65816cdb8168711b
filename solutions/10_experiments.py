# %% [markdown]
# # 10 · Exercises: an ablation of your own
#
# Companion of `notebooks/10_experiments.ipynb`.
# Design one controlled experiment on the sorting task, run it, and read it.
# The check does not grade your conclusion; it grades the method: one change against a baseline, several seeds,
# scores that a rerun reproduces, and a reading that states what was measured.
# A reference design is in `solutions/10_experiments.py` (or `make solution EX=10.ablation`): design your own first.

# %%
from dataclasses import replace

from helpers.course.experiments import ExperimentConfig, run_experiment, spread

# A small configuration that trains in a fraction of a second per seed on a laptop CPU.
small = ExperimentConfig(steps=120, d_model=32, n_heads=2, seq_len=6, batch_size=32, eval_size=256, lr=3e-3)

# %% [markdown]
# ## Your ablation
#
# Notebook 10 changed one thing at a time (positions, Pre-LN or Post-LN, heads, dropout, layer-wise decay) and ran
# each setting with several seeds.
# Pick a question of your own, for example: does warm-up rescue Post-LN at a high learning rate?
# Does a wider feed-forward layer help at this size? Does weight decay matter on a task with fresh data at every step?
#
# `my_ablation()` returns a dict with:
# `question` (one sentence), `metric` (a key of `run_experiment(...).metrics`, such as `"val_acc"`),
# `baseline` and `variant` (two `ExperimentConfig` that differ in exactly one setting), `seeds` (at least two),
# `baseline_scores` and `variant_scores` (the metric per seed, from `run_experiment(replace(config, seed=s))`),
# and `reading`: what the numbers say, quoting the mean of each arm, and whether the gap is larger than the spread
# over seeds (`spread(scores)` formats "mean [min–max]").


# %% exercise 10.ablation
def my_ablation():
    """Run one controlled experiment with several seeds and return its design, its scores and a reading."""
    # SOLUTION hint: two configs that differ in one field, the same seeds for both, a reading built from the scores.
    baseline = replace(small, norm_first=False, lr=1e-2)  # Post-LN at a high learning rate, no warm-up
    variant = replace(baseline, warmup_steps=30)  # the one change: 30 steps of linear warm-up
    seeds = [0, 1, 2]
    metric = "val_acc"
    scores = {
        arm: [run_experiment(replace(cfg, seed=s)).metrics[metric] for s in seeds]
        for arm, cfg in (("baseline", baseline), ("variant", variant))
    }
    base_mean = sum(scores["baseline"]) / len(seeds)
    var_mean = sum(scores["variant"]) / len(seeds)
    gap = var_mean - base_mean
    separated = min(scores["variant"]) > max(scores["baseline"]) or max(scores["variant"]) < min(scores["baseline"])
    reading = (
        f"Without warm-up, Post-LN reached a validation accuracy of {base_mean:.3f} "
        f"({spread(scores['baseline'])} over {len(seeds)} seeds); with 30 warm-up steps it reached {var_mean:.3f} "
        f"({spread(scores['variant'])}). "
        + (
            f"The gap of {gap:+.3f} is larger than the spread over seeds: every seed of one arm beats every seed of "
            "the other, so at this rate warm-up changes the outcome."
            if separated
            else f"The gap of {gap:+.3f} is within the spread over seeds: these runs cannot tell the two apart."
        )
    )
    return {
        "question": "Does a short linear warm-up help Post-LN train the sorting task at a high learning rate?",
        "metric": metric,
        "baseline": baseline,
        "variant": variant,
        "seeds": seeds,
        "baseline_scores": scores["baseline"],
        "variant_scores": scores["variant"],
        "reading": reading,
    }
    # END SOLUTION


# %%
result = my_ablation()
print(result["reading"])
