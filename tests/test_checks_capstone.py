"""The capstone's checks (12): each planted mistake, a small edit of the reference solution, is caught with feedback
that names its symptom; the checks' functional GPT agrees with the course's (solutions and stubs: test_workspace.py).
"""

import re

import pytest
import torch

from grader import workspace as ws
from grader.checks import capstone as cap
from helpers.models import GPT

SOURCE = ws.SOLUTIONS_DIR / "12_build_your_gpt.py"


def planted(tmp_path, exercise_ids, *edits) -> dict[str, str]:
    """Grade the reference solution with each (old, new) edit made (old must occur once); return the report texts."""
    text = SOURCE.read_text(encoding="utf-8")
    for old, new in edits:
        assert text.count(old) == 1, f"the edit does not fit the solution any more: {old!r}"
        text = text.replace(old, new)
    path = tmp_path / SOURCE.name
    path.write_text(text, encoding="utf-8")
    src = ws.parse_source(path)
    setup = next(c for c in src.cells if c.kind == "code")
    cells = [("", setup.source)] + [(c.exercise, c.source) for c in src.cells if c.kind == "exercise"]
    graded = ws.grade_cells(src.name, cells, list(exercise_ids), tmp_path)
    return {g.report.exercise: g.report for g in graded}


def caught(reports, exercise_id, *phrases) -> str:
    report = reports[exercise_id]
    text = report.text()
    assert not report.passed, text
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    return text


MASK = 'weights = self.drop(softmax(scores.masked_fill(~causal, float("-inf"))))'
ATTN_RES = "x = x + self.drop(self.self_attn(self.norms[0](x)))"
FF_RES = "x = x + self.drop(self.ff(self.norms[1](x)))"
EMBED = 'x = self.drop(self.tok_emb(idx) + self.pos_emb["embedding"](positions))'


def test_the_reference_solution_passes(tmp_path):
    reports = planted(tmp_path, ["12.gpt", "12.train"])
    assert all(r.passed for r in reports.values()), "\n".join(r.text() for r in reports.values())


def test_no_causal_mask(tmp_path):
    reports = planted(tmp_path, ["12.attention", "12.gpt"], (MASK, "weights = self.drop(softmax(scores))"))
    caught(reports, "12.attention", "a position sees tokens that come after it")
    caught(reports, "12.gpt", "known mistake: no causal mask", "changing the tokens after position 7 changed")


def test_causal_mask_off_by_one(tmp_path):
    reports = planted(tmp_path, ["12.attention", "12.gpt"], (".tril()  # query i sees", ".tril(1)  # query i sees"))
    caught(reports, "12.attention", "a position sees tokens that come after it")
    caught(reports, "12.gpt", "a causal mask off by one (each position also sees the next token)")


def test_missing_residual(tmp_path):
    reports = planted(
        tmp_path,
        ["12.block", "12.gpt"],
        (ATTN_RES, ATTN_RES.replace("x + ", "")),
        (FF_RES, FF_RES.replace("x + ", "")),
    )
    for ex in ("12.block", "12.gpt"):
        caught(reports, ex, "no residual connection")


def test_post_ln_where_pre_ln_is_asked(tmp_path):
    reports = planted(
        tmp_path,
        ["12.block", "12.gpt"],
        (ATTN_RES, "x = self.norms[0](x + self.drop(self.self_attn(x)))"),
        (FF_RES, "x = self.norms[1](x + self.drop(self.ff(x)))"),
    )
    for ex in ("12.block", "12.gpt"):
        caught(reports, ex, "the norm after the residual sum (Post-LN)")


def test_no_final_norm(tmp_path):
    reports = planted(tmp_path, ["12.gpt"], ("logits = self.lm_head(self.norm(x))", "logits = self.lm_head(x)"))
    caught(reports, "12.gpt", "no final LayerNorm before the output head")


def test_positions_missing(tmp_path):
    reports = planted(tmp_path, ["12.gpt"], (EMBED, "x = self.drop(self.tok_emb(idx))"))
    caught(reports, "12.gpt", "no position embeddings")


def test_positions_added_twice(tmp_path):
    twice = 'x = self.drop(self.tok_emb(idx) + 2 * self.pos_emb["embedding"](positions))'
    reports = planted(tmp_path, ["12.gpt"], (EMBED, twice))
    caught(reports, "12.gpt", "the position embeddings added twice")


def test_untied_head(tmp_path):
    reports = planted(tmp_path, ["12.gpt"], ("self.lm_head.weight = self.tok_emb.weight  # tied: one tensor", ""))
    text = caught(reports, "12.gpt", "exactly vocab_size * d_model too many", "are two tensors")
    assert "✓ with the course's weights loaded" in text  # the logits alone cannot tell: the weights are loaded equal


def test_loss_without_the_shift_is_suspiciously_low(tmp_path):
    reports = planted(tmp_path, ["12.train"], ("_, loss = model(x, y)", "_, loss = model(x, x)"))
    caught(reports, "12.train", "suspiciously low", "asked for something it can already see")


def test_model_loss_against_the_inputs(tmp_path):
    reports = planted(
        tmp_path, ["12.gpt"], ("targets.reshape(b * t))", "idx.reshape(b * t))  # the inputs, not the targets")
    )
    caught(reports, "12.gpt", "the loss of predicting the inputs themselves")


def test_dropout_left_on_at_evaluation(tmp_path):
    on = 'x = nn.functional.dropout(self.tok_emb(idx) + self.pos_emb["embedding"](positions), self.cfg.dropout)'
    reports = planted(tmp_path, ["12.gpt"], (EMBED, on))
    caught(reports, "12.gpt", "two calls in eval mode gave different logits: something random still runs")


def test_adamw_without_bias_correction(tmp_path):
    reports = planted(
        tmp_path,
        ["12.adamw"],
        ("m_hat = m / (1 - beta1**t)", "m_hat = m"),
        ("v_hat = v / (1 - beta2**t)", "v_hat = v"),
    )
    caught(reports, "12.adamw", "the moments not divided by (1 - beta^t)")


def test_adamw_eps_inside_the_square_root(tmp_path):
    reports = planted(tmp_path, ["12.adamw"], ("(v_hat.sqrt() + eps)", "(v_hat + eps).sqrt()"))
    caught(reports, "12.adamw", "eps added inside the square root")


def test_adamw_coupled_weight_decay(tmp_path):
    reports = planted(
        tmp_path,
        ["12.adamw"],
        (
            "m.mul_(beta1).add_(p.grad, alpha=1 - beta1)",
            "g = p.grad + wd * p\n                m.mul_(beta1).add_(g, alpha=1 - beta1)",
        ),
        ("v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)", "v.mul_(beta2).addcmul_(g, g, value=1 - beta2)"),
        ("p.mul_(1 - lr * wd)", "pass"),
    )
    caught(reports, "12.adamw", "weight decay added to the gradient (L2")


def test_weight_decay_on_norms(tmp_path):
    reports = planted(
        tmp_path,
        ["12.decay_groups"],
        (
            "linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}",
            'linear = {id(p) for n, p in model.named_parameters() if n.endswith("weight")}',
        ),
    )
    caught(reports, "12.decay_groups", "decayed but should not be: blocks.0.norms", "LayerNorm gains and biases get")


def test_clipping_per_parameter(tmp_path):
    reports = planted(
        tmp_path,
        ["12.clip"],
        ("g.mul_(factor)", "g.mul_(min(1.0, max_norm / (float(g.norm()) + 1e-6)))"),
    )
    caught(reports, "12.clip", "clipped on its own norm, not all of them by the global norm")


def test_missing_zero_grad(tmp_path):
    reports = planted(tmp_path, ["12.train"], ("        optimizer.zero_grad(set_to_none=True)\n", ""))
    caught(reports, "12.train", "the gradients are never cleared")


def test_schedule_stepped_before_the_optimiser(tmp_path):
    reports = planted(
        tmp_path, ["12.train"], ('group["lr"] = lr_at(step, max_lr', 'group["lr"] = lr_at(step + 1, max_lr')
    )
    caught(reports, "12.train", "the schedule runs one step ahead of the optimiser")


def test_softmax_without_the_shift_overflows(tmp_path):
    reports = planted(tmp_path, ["12.softmax"], ("shifted = x - x.max(dim=-1, keepdim=True).values", "shifted = x"))
    caught(reports, "12.softmax", "NaN", "exp of a large logit overflows")


def test_cross_entropy_as_the_log_of_the_softmax(tmp_path):
    old = "log_probs = logits - m - torch.log(torch.exp(logits - m).sum(dim=-1, keepdim=True))"
    reports = planted(tmp_path, ["12.cross_entropy"], (old, "log_probs = torch.log(softmax(logits))"))
    caught(reports, "12.cross_entropy", "underflows to 0 has a log of -inf")


def test_sampling_without_the_temperature(tmp_path):
    reports = planted(tmp_path, ["12.sample"], ("logits[:, -1, :] / temperature", "logits[:, -1, :]"))
    caught(reports, "12.sample", "the temperature is not applied")


def test_sampling_without_cropping_the_context(tmp_path):
    reports = planted(tmp_path, ["12.sample"], ("idx[:, -model.cfg.block_size :]", "idx"))
    caught(reports, "12.sample", "exceed block_size", "at most block_size positions")


@pytest.mark.parametrize("kw", [{}, {"n_layers": 1, "n_heads": 2}])
def test_the_functional_reference_is_the_course_gpt(kw):
    cfg = cap._cfg(**kw)
    model = cap._course_gpt(cfg).double().eval()
    idx = torch.randint(cfg.vocab_size, (2, cfg.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(idx)[0]
        got = cap._gpt_logits(model.state_dict(), cfg, idx)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
    assert isinstance(model, GPT)


# ---------------------------------------------------------------- 12.shakespeare: the whole pipeline on real text

TOKENS = "chars = sorted(set(text))  # each distinct character once, in order"


@pytest.fixture
def short_run(monkeypatch):
    """The Tiny Shakespeare check at 40 steps, so that a planted mistake costs seconds."""
    from grader.checks import shakespeare

    quick = dict(shakespeare.SETTINGS["quick"], steps=40, warmup=4)
    monkeypatch.setattr(shakespeare, "SETTINGS", {"quick": quick, "full": quick})
    return shakespeare


def test_shakespeare_reference_trains_and_reports_curves_and_a_sample(tmp_path, short_run, monkeypatch):
    figure = tmp_path / "curves.png"
    monkeypatch.setattr(short_run, "FIGURE", figure)
    report = planted(tmp_path, ["12.shakespeare"])["12.shakespeare"]
    text = report.text()
    assert report.passed, text
    assert "validation loss: yours" in text and "your GPT, temperature 0.8:\nROMEO:" in text.replace("      ", "")
    assert figure.stat().st_size > 10_000
    mine, theirs = (float(v) for v in re.findall(r"yours ([\d.]+), the course's ([\d.]+)", text)[0])
    assert abs(mine - theirs) < 0.01 and theirs < 3.5  # 40 steps from 4.17: it learned, and like the course's


def test_shakespeare_unsorted_characters(tmp_path, short_run):
    reports = planted(tmp_path, ["12.shakespeare"], (TOKENS, "chars = list(dict.fromkeys(text))"))
    caught(reports, "12.shakespeare", "chars should be [' ', ',', 'b', 'e'", "sorted(set(text))")


def test_shakespeare_a_loop_without_zero_grad_ends_far_from_the_course(tmp_path, short_run):
    reports = planted(
        tmp_path,
        ["12.shakespeare"],
        ("optimizer.zero_grad(set_to_none=True)", "pass  # the gradients are never cleared"),
    )
    caught(reports, "12.shakespeare", "your validation loss is", "the checks of 12.gpt and 12.train")


def test_shakespeare_without_the_text_names_where_to_put_it(tmp_path, short_run, monkeypatch):
    from helpers.course.data import DataUnavailableError

    def offline():
        raise DataUnavailableError("no Tiny Shakespeare: put tinyshakespeare.txt into data/")

    monkeypatch.setattr(short_run, "load_text", offline)
    caught(planted(tmp_path, ["12.shakespeare"]), "12.shakespeare", "put tinyshakespeare.txt into data/")
