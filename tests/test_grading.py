"""The checker itself: differences and symptoms it names, and the 01 checks on planted mistakes."""

import math

import torch

from grader.core import difference, grade, weight_symptoms


def test_difference_names_shape_nan_and_the_largest_gap():
    want = torch.zeros(2, 3)
    assert difference("x", want.clone(), want) is None
    assert "shape (3, 2), expected (2, 3)" in difference("x", torch.zeros(3, 2), want)
    got = want.clone()
    got[1, 2] = math.nan
    assert "NaN value(s), the first at index (1, 2)" in difference("x", got, want)
    got = want.clone()
    got[0, 1] = 0.5
    assert "largest difference 0.5 at index (0, 1)" in difference("x", got, want)
    assert "should be a tensor" in difference("x", [0.0], want)


def test_weight_symptoms():
    causal = torch.ones(3, 3, dtype=torch.bool).tril()
    good = torch.softmax(torch.randn(3, 3).masked_fill(~causal, -math.inf), dim=-1)
    assert weight_symptoms(good, causal) is None
    assert "above the diagonal" in weight_symptoms(torch.full((3, 3), 1 / 3), causal)
    assert "sum to" in weight_symptoms(torch.softmax(torch.randn(3, 3), dim=0))
    assert "NaN" in weight_symptoms(torch.full((2, 2), math.nan))
    keys = torch.tensor([True, True, False])
    assert "masked key" in weight_symptoms(torch.full((3, 3), 1 / 3), keys)
    dead = torch.zeros(3, dtype=torch.bool)
    assert "every key masked: its weights should all be 0" in weight_symptoms(torch.full((3, 3), 1 / 3), dead)
    assert "(a softmax over a row of -inf)" in weight_symptoms(torch.full((3, 3), math.nan), dead)


def _one_query_without_scale(query, keys, values):
    w = torch.softmax(keys @ query, dim=0)
    return w, w @ values


def _all_queries_softmax_over_queries(queries, keys, values):
    w = torch.softmax(queries @ keys.T / math.sqrt(queries.shape[-1]), dim=0)
    return w @ values, w


def _all_queries(queries, keys, values):
    w = torch.softmax(queries @ keys.T / math.sqrt(queries.shape[-1]), dim=-1)
    return w @ values, w


def test_01_checks_catch_planted_mistakes():
    report = grade("01.one_query", _one_query_without_scale)
    assert not report.passed and "sqrt(d_k)" in report.text()
    report = grade("01.all_queries", _all_queries_softmax_over_queries)
    assert not report.passed and "sum to" in report.text() and "dim=0" in report.text()
    report = grade("01.all_queries", lambda q, k, v: _all_queries(q, k, v)[::-1])
    assert not report.passed and "shape" in report.text()
    assert grade("01.all_queries", _all_queries).passed


def test_a_crash_in_the_learners_code_is_feedback():
    def broken(queries, keys, values):
        return queries @ values.T @ keys  # shapes that do not fit

    report = grade("01.all_queries", broken)
    assert not report.passed
    assert "raised RuntimeError" in report.text()
    assert "print the shape" in report.text()


def test_not_written_stops_after_the_first_case():
    def stub(queries, keys, values):
        raise NotImplementedError("one matrix product for the scores")

    report = grade("01.all_queries", stub)
    assert len(report.cases) == 1
    assert report.cases[0].detail == "not written yet"
    assert report.cases[0].hint == "one matrix product for the scores"
    assert "✗" in report.text() and "hint: one matrix product" in report.text()
