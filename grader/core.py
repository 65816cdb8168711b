"""The exercise checker: cases, feedback that names the symptom, and the registry of checks (exercises/).

A check runs the learner's function on a few cases and compares it with the course's oracles (PyTorch's own modules
and the helpers, in float64). Each case reports ✓ or ✗; a failure says what differed (shape, largest difference and
where, NaN, weight above the diagonal, rows that do not sum to 1) and, when the output matches a known mistake, a hint
that names the mistake without giving the solution.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Imported on first use; importing them registers their checks.
CHECK_MODULES = (
    "grader.checks.basics",
    "grader.checks.models",
    "grader.checks.research",
    "grader.checks.modern",
    "grader.checks.capstone",
    "grader.checks.shakespeare",
)


@dataclass
class CaseResult:
    """One case of a check: its name, whether it passed, what differed and the likely mistake."""

    name: str
    passed: bool
    detail: str = ""
    hint: str = ""
    notes: list[str] = field(default_factory=list)  # what the case measured, shown under it (a loss, a sample)


@dataclass
class Report:
    """Everything one check found, shown as one line per case."""

    exercise: str
    title: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when there were cases and every one passed."""
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def first_failure(self) -> str:
        """The first failing case in one line ('' when everything passed)."""
        for c in self.cases:
            if not c.passed and c.detail == "not written yet":
                return f"not written yet (hint: {c.hint})"
            if not c.passed:
                return f"{c.name}: {c.detail}" + (f" (hint: {c.hint})" if c.hint else "")
        return ""

    def text(self) -> str:
        """The report as a learner reads it."""
        n_ok = sum(c.passed for c in self.cases)
        lines = [f"{self.exercise} · {self.title}: {n_ok}/{len(self.cases)} cases passed"]
        for c in self.cases:
            lines.append(f"  {'✓' if c.passed else '✗'} {c.name}")
            lines += [f"      {line}" for note in c.notes for line in note.splitlines()]
            if not c.passed:
                lines += [f"      {line}" for line in c.detail.splitlines()]
                if c.hint:
                    lines.append(f"      hint: {c.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()


class CaseFailed(Exception):
    """Raised inside a case to stop it with a message (and an optional hint)."""

    def __init__(self, detail: str, hint: str = ""):
        super().__init__(detail)
        self.detail, self.hint = detail, hint


class NotWritten(Exception):
    """The learner's function still raises NotImplementedError: every case would fail the same way."""


class Case:
    """The context of one case: call the learner's function, then state what must hold."""

    def __init__(self, name: str):
        self.name = name
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Add a line (or several) that the report shows under this case, passed or failed."""
        self.notes.append(text)

    def call(self, fn: Callable, *args, error_hints: tuple[tuple[str, str], ...] = (), **kwargs):
        """Call the learner's function; report an exception it raises as this case's failure.

        error_hints: (phrase, hint) pairs; an error whose message contains the phrase gets that hint.
        """
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as e:
            raise NotWritten(str(e) or "this function is still the stub") from None
        except CaseFailed:
            raise
        except Exception as e:  # noqa: BLE001 - any error in the learner's code is feedback, not a crash
            hint = next((h for phrase, h in error_hints if phrase in str(e)), "") or _error_hint(e)
            raise CaseFailed(f"raised {type(e).__name__}: {e}", hint) from None

    def expect_raises(self, error: type[Exception], why: str, fn: Callable, *args) -> None:
        """Pass when fn(*args) raises `error`; fail naming what it did instead."""
        hint = f"check the argument first and raise {error.__name__}"
        try:
            got = fn(*args)
        except NotImplementedError as e:
            raise NotWritten(str(e) or "this function is still the stub") from None
        except error:
            return
        except Exception as e:  # noqa: BLE001 - the wrong error is feedback
            raise CaseFailed(
                f"should raise {error.__name__} ({why}); it raised {type(e).__name__}: {e}", hint
            ) from None
        shape = f"a tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        raise CaseFailed(f"should raise {error.__name__} ({why}), but returned {shape}", hint)

    def fail(self, detail: str, hint: str = "") -> None:
        """Stop the case as failed."""
        raise CaseFailed(detail, hint)

    def expect(self, condition: bool, detail: str, hint: str = "") -> None:
        """Fail with detail unless condition holds."""
        if not condition:
            raise CaseFailed(detail, hint)

    def expect_close(
        self,
        what: str,
        got,
        want: torch.Tensor,
        atol: float = 1e-6,
        rtol: float = 1e-5,
        mistakes: dict[str, torch.Tensor] | None = None,
        hint: str = "",
    ) -> None:
        """Fail unless got is a tensor of want's shape, finite where want is, and equal within tolerance.

        mistakes maps a likely mistake (said as a hint) to the output that mistake would give.
        """
        detail = difference(what, got, want, atol, rtol)
        if detail is None:
            return
        found = matching_mistake(got, mistakes or {}, atol, rtol)
        raise CaseFailed(detail, found or hint)

    def expect_weights(
        self,
        got,
        want: torch.Tensor,
        allowed: torch.Tensor | None = None,
        mistakes: dict[str, torch.Tensor] | None = None,
        what: str = "the attention weights",
    ) -> None:
        """Like expect_close for attention weights, naming the symptom first (NaN, a masked key, a row sum)."""
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            symptom = weight_symptoms(got, allowed)
            if symptom:
                raise CaseFailed(symptom, matching_mistake(got, mistakes or {}) or symptom_hint(symptom))
        self.expect_close(what, got, want, mistakes=mistakes)


def _error_hint(e: Exception) -> str:
    """A hint for common errors raised by tensor code."""
    msg = str(e)
    if "view size is not compatible" in msg:
        return "a transposed tensor is not contiguous in memory, so view cannot merge its axes: reshape can"
    if isinstance(e, RuntimeError) and ("size of tensor" in msg or "shapes cannot be multiplied" in msg):
        return "two shapes do not fit: print the shape of each tensor before the line that fails"
    if isinstance(e, IndexError | RuntimeError) and "Dimension out of range" in msg:
        return "an axis that does not exist: count the dimensions of the tensor (negative axes count from the end)"
    return ""


def difference(what: str, got, want: torch.Tensor, atol: float = 1e-6, rtol: float = 1e-5) -> str | None:
    """Say how got differs from want (None when they are equal within tolerance)."""
    if not isinstance(got, torch.Tensor):
        return f"{what} should be a tensor of shape {tuple(want.shape)}, got {type(got).__name__}"
    if got.shape != want.shape:
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    got_d, want_d = got.detach().double().cpu(), want.detach().double().cpu()
    bad = torch.isnan(got_d) & ~torch.isnan(want_d)
    if bad.any():
        where = tuple(int(i) for i in bad.nonzero()[0])
        return f"{what} has {int(bad.sum())} NaN value(s), the first at index {where}"
    if torch.allclose(got_d, want_d, atol=atol, rtol=rtol, equal_nan=True):
        return None
    diff = (got_d - want_d).abs().nan_to_num(nan=0.0, posinf=math.inf)
    flat = int(diff.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.dim() else ()
    return (
        f"{what} differs from the reference: largest difference {float(diff.max()):.4g} at index {where} "
        f"(got {float(got_d[where]):.4g}, expected {float(want_d[where]):.4g})"
    )


def mistake_hint(label: str) -> str:
    """The hint for an output that a known mistake produces."""
    return f"your output matches a known mistake: {label}"


def matching_mistake(got, mistakes: dict, atol: float = 1e-6, rtol: float = 1e-5, same: Callable | None = None) -> str:
    """The first mistake whose output got equals ('' when none does).

    Outputs are tensors compared within tolerance, unless `same(got, wrong)` is given (for numbers, lists, tuples).
    """
    for label, wrong in mistakes.items():
        if same(got, wrong) if same else difference("", got, wrong, atol, rtol) is None:
            return mistake_hint(label)
    return ""


def symptom_hint(symptom: str) -> str:
    """The likely cause of a symptom that weight_symptoms names ('' when there is no usual one)."""
    if "NaN" in symptom:
        return "a softmax over a row of -inf is 0/0: give a query whose keys are all masked zero weights"
    if "not 1" in symptom:
        return "the weights were changed after the softmax, or normalised along another axis than the keys"
    if "every key masked" in symptom:
        return "a large negative number instead of -inf spreads a fully masked row evenly over its keys"
    if "above the diagonal" in symptom or "masked key" in symptom:
        return (
            "a forbidden key needs a score of -inf before the softmax; a boolean mask is True where a query may attend"
        )
    return ""


def weight_symptoms(weights, allowed: torch.Tensor | None = None) -> str | None:
    """Say what is wrong with attention weights (..., T_q, T_k): NaN, negative, rows not summing to 1, weight on
    keys the mask forbids (above the diagonal when allowed is causal). None when nothing is.

    allowed: a boolean mask broadcastable to the weights (True = may attend); rows with nothing allowed must be 0.
    """
    if not isinstance(weights, torch.Tensor):
        return f"the attention weights should be a tensor, got {type(weights).__name__}"
    w = weights.detach().double().cpu()
    live = torch.ones(w.shape[:-1], dtype=torch.bool)
    if allowed is not None:
        allowed = allowed.cpu().expand_as(w)
        live = allowed.any(-1)
    nan = torch.isnan(w)
    if nan.any():
        where = tuple(int(i) for i in nan.nonzero()[0])
        if not live[where[:-1]]:
            return (
                f"NaN weights for query {where[-2]}, whose keys are all masked (a softmax over a row of -inf): "
                "such a query should get zero weights"
            )
        return f"the attention weights hold NaN ({int(nan.sum())} values, the first at index {where})"
    if (w < -1e-9).any():
        return "some attention weights are negative: the softmax was not applied"
    sums = w.sum(-1)
    if (sums[~live].abs() > 1e-6).any():
        where = tuple(int(i) for i in ((sums.abs() > 1e-6) & ~live).nonzero()[0])
        total = float(sums[where])
        return f"query {where[-1]} has every key masked: its weights should all be 0, they sum to {total:.3g}"
    if allowed is not None:
        forbidden = w.masked_fill(allowed, 0.0)
        if (forbidden.abs() > 1e-6).any():
            where = tuple(int(i) for i in (forbidden.abs() > 1e-6).nonzero()[0])
            q, k = where[-2], where[-1]
            if _is_causal(allowed) and k > q:
                return f"weight above the diagonal: query {q} attends to the later key {k} ({float(w[where]):.3g})"
            return f"weight on a masked key: query {q} gives key {k} weight {float(w[where]):.3g}"
    off = (sums - 1).abs().masked_fill(~live, 0.0)
    if (off > 1e-6).any():
        where = tuple(int(i) for i in (off > 1e-6).nonzero()[0])
        return f"the weights of query {where[-1]} sum to {float(sums[where]):.4g}, not 1"
    return None


def _is_causal(allowed: torch.Tensor) -> bool:
    """True when the last two axes of a boolean mask are lower-triangular and full below the diagonal."""
    m = allowed.reshape(-1, *allowed.shape[-2:])[0]
    return bool(torch.equal(m, torch.ones_like(m).tril(m.shape[-1] - m.shape[-2])))


# ---------------------------------------------------------------- the registry


@dataclass
class Exercise:
    """One exercise: the notebook it belongs to, the function the learner writes and the check that grades it."""

    id: str  # "02.sdpa": notebook number, then a short name
    title: str
    function: str  # the name the learner's function must have
    run: Callable[[Callable, Callable], None]  # run(fn, case): opens cases with case(name) and checks fn in them
    time_factor: float = 1.0  # the check may run this many times the workspace's time limit (a training run)

    @property
    def notebook(self) -> str:
        """The two-digit number of the teaching notebook."""
        return self.id.split(".")[0]


EXERCISES: dict[str, Exercise] = {}


def exercise(exercise_id: str, title: str, function: str, time_factor: float = 1.0):
    """Register a check: the decorated function receives the learner's function and a `case(name)` opener."""

    def register(run):
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise {exercise_id} is registered twice")
        EXERCISES[exercise_id] = Exercise(exercise_id, title, function, run, time_factor)
        return run

    return register


def load_checks() -> dict[str, Exercise]:
    """Import the check modules (once) and return every registered exercise."""
    for name in CHECK_MODULES:
        importlib.import_module(name)
    return EXERCISES


class _Cases:
    """Collect the results of the cases a check opens; stop after the first 'not written yet'."""

    def __init__(self, report: Report):
        self.report = report
        self.not_written = ""

    def __call__(self, name: str):
        return _CaseScope(self, name)


class _CaseScope:
    def __init__(self, cases: _Cases, name: str):
        self.cases, self.case = cases, Case(name)

    def __enter__(self) -> Case:
        if self.cases.not_written:
            raise NotWritten(self.cases.not_written)
        return self.case

    def __exit__(self, exc_type, exc, tb) -> bool:
        report = self.cases.report
        if exc_type is None:
            report.cases.append(CaseResult(self.case.name, True, notes=self.case.notes))
            return False
        if not issubclass(exc_type, Exception):
            return False  # Ctrl-C, a time limit (grader.workspace.OutOfTime): not the case's failure, stop the check
        if issubclass(exc_type, NotWritten):
            self.cases.not_written = str(exc)
            report.cases.append(CaseResult(self.case.name, False, "not written yet", str(exc)))
            return True
        if issubclass(exc_type, CaseFailed):
            report.cases.append(CaseResult(self.case.name, False, exc.detail, exc.hint, self.case.notes))
            return True
        report.cases.append(CaseResult(self.case.name, False, f"{exc_type.__name__}: {exc}", "", self.case.notes))
        return True


def grade(exercise_id: str, fn) -> Report:
    """Run the check of one exercise on fn and return its report."""
    exercises = load_checks()
    if exercise_id not in exercises:
        raise KeyError(f"no exercise {exercise_id!r}; known: {', '.join(sorted(exercises))}")
    ex = exercises[exercise_id]
    report = Report(ex.id, ex.title)
    if not callable(fn):
        report.cases.append(CaseResult("the function exists", False, f"expected a function, got {type(fn).__name__}"))
        return report
    cases = _Cases(report)
    torch.manual_seed(0)
    try:
        ex.run(fn, cases)
    except NotWritten as e:  # raised when opening a case after the stub was found
        if not report.cases:
            report.cases.append(CaseResult("the function runs", False, "not written yet", str(e)))
    if not report.cases:
        report.cases.append(CaseResult("the check ran a case", False, "the check opened no case"))
    return report


def check(exercise_id: str, fn) -> Report:
    """Grade the learner's function for one exercise; the report shows as the cell's output."""
    return grade(exercise_id, fn)
