"""The learner's workspace: exercise notebooks made from the reference solutions, and headless grading (exercises).

One source of truth: solutions/NN_name.py holds the reference solutions in the percent format (`# %%` code cells,
`# %% [markdown]` text cells, `# %% exercise ID` for the cell the learner writes). Inside an exercise cell, the lines
from `# SOLUTION hint: ...` to `# END SOLUTION` are the solution; the workspace gets a stub there that raises
NotImplementedError with the hint, followed by a cell that checks it.

    python -m grader.workspace create            make exercises/ (never overwrites a notebook that is there)
    python -m grader.workspace check             grade exercises/ and print a scoreboard
    python -m grader.workspace check-solutions   grade the reference solutions the same way
    python -m grader.workspace reset 02          restore one exercise notebook (the old one is kept in a backup)
    python -m grader.workspace solution 02.sdpa  print the reference solution of one exercise
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grader.core import CaseResult, Report, grade, load_checks
from helpers.course.utils import COURSE_KERNEL, PROJECT_ROOT, atomic_write_text, relative

SOLUTIONS_DIR = PROJECT_ROOT / "solutions"
WORKSPACE_DIR = PROJECT_ROOT / "exercises"
BACKUP_DIR_NAME = "backup"
CHECK_IMPORT = "from grader.core import check  # grades each exercise against the course's oracles"
_HEADER = re.compile(r"^# %%(?: (?P<kind>\[markdown\]|exercise (?P<id>\S+)))?\s*$")
_SOLUTION = re.compile(r"^(?P<indent>\s*)# SOLUTION hint: (?P<hint>.+?)\s*$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")


class WorkspaceError(Exception):
    """A solution source or an exercise notebook that cannot be used, said in one line."""


@dataclass
class Cell:
    """One cell of a solution source: 'markdown', 'code' or 'exercise' (with its exercise id)."""

    kind: str
    source: str
    exercise: str = ""


@dataclass
class Source:
    """A parsed solution file."""

    path: Path
    cells: list[Cell] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The notebook name, such as 02_scaled_dot_product_attention."""
        return self.path.stem

    @property
    def number(self) -> str:
        """The two-digit notebook number."""
        return self.name[:2]

    @property
    def exercises(self) -> list[str]:
        """The exercise ids in the order they appear."""
        return [c.exercise for c in self.cells if c.kind == "exercise"]

    def digest(self) -> str:
        """A short hash of the file, stored in the notebook made from it (to notice a newer course version)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def parse_source(path: Path | str) -> Source:
    """Split a percent-format solution file into cells."""
    path = Path(path)
    src = Source(path)
    kind, ex_id, lines = None, "", []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind is not None and text.strip():
            if kind == "markdown":
                text = "\n".join(re.sub(r"^# ?", "", line) for line in text.splitlines())
            src.cells.append(Cell(kind, text, ex_id))

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            flush()
            kind = "markdown" if m["kind"] == "[markdown]" else ("exercise" if m["id"] else "code")
            ex_id, lines = m["id"] or "", []
        elif kind is None:
            if line.strip():
                raise WorkspaceError(f"{relative(path)}:{number}: text before the first '# %%' cell")
        else:
            lines.append(line)
    flush()
    return src


def stub(cell: Cell) -> str:
    """The learner's version of an exercise cell: each solution region becomes `raise NotImplementedError(hint)`."""
    out, inside = [], False
    for line in cell.source.splitlines():
        start = _SOLUTION.match(line)
        if start:
            if inside:
                raise WorkspaceError(f"{cell.exercise}: a SOLUTION region opens inside another")
            inside = True
            hint = start["hint"].replace("\\", "\\\\").replace('"', '\\"')
            out.append(f"{start['indent']}# Your code here.")
            out.append(f'{start["indent"]}raise NotImplementedError("{hint}")')
        elif _END.match(line):
            if not inside:
                raise WorkspaceError(f"{cell.exercise}: END SOLUTION without a SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise WorkspaceError(f"{cell.exercise}: a SOLUTION region is never closed")
    if len(out) == len(cell.source.splitlines()):
        raise WorkspaceError(f"{cell.exercise}: the exercise cell has no '# SOLUTION hint: ...' region")
    return "\n".join(out)


def solution(cell: Cell) -> str:
    """The reference version of an exercise cell, without the region markers."""
    return "\n".join(line for line in cell.source.splitlines() if not (_SOLUTION.match(line) or _END.match(line)))


def sources() -> list[Source]:
    """Every solution file, in course order."""
    paths = sorted(SOLUTIONS_DIR.glob("[0-9][0-9]_*.py"))
    if not paths:
        raise WorkspaceError(f"no solution files in {relative(SOLUTIONS_DIR)}")
    return [parse_source(p) for p in paths]


def check_call(exercise_id: str) -> str:
    """The source of the check cell that follows an exercise."""
    function = load_checks()[exercise_id].function
    return f'check("{exercise_id}", {function})'


def _nb_cell(cell_type: str, source: str, tags: list[str] | None = None, exercise: str = "") -> dict:
    meta: dict = {}
    if tags:
        meta["tags"] = tags
    if exercise:
        meta["exercise"] = exercise
    cell = {"cell_type": cell_type, "metadata": meta, "source": source}
    if cell_type == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def exercise_notebook(src: Source, with_solutions: bool = False) -> dict:
    """The workspace notebook (as JSON) for one solution file; with_solutions keeps the reference code."""
    cells, imported = [], False
    for cell in src.cells:
        if cell.kind == "markdown":
            cells.append(_nb_cell("markdown", cell.source))
        elif cell.kind == "code":
            source = cell.source if imported else f"{CHECK_IMPORT}\n\n{cell.source}"
            imported = True
            cells.append(_nb_cell("code", source, ["setup"] if source != cell.source else []))
        else:
            code = solution(cell) if with_solutions else stub(cell)
            cells.append(_nb_cell("code", code, ["exercise"], cell.exercise))
            cells.append(_nb_cell("code", check_call(cell.exercise), ["check"], cell.exercise))
    if not imported:
        raise WorkspaceError(f"{relative(src.path)} has no setup code cell")
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": dict(COURSE_KERNEL),
            "language_info": {"name": "python"},
            "course_exercises": {"source": relative(src.path), "source_digest": src.digest()},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook_text(nb: dict) -> str:
    """Serialise a notebook the way Jupyter writes it (one-space indent, a final newline)."""
    for i, cell in enumerate(nb["cells"]):
        cell.setdefault("id", f"cell-{i:02d}")
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def workspace_path(src: Source, workspace: Path | None = None) -> Path:
    """Where the exercise notebook of a solution file lives (in exercises/ unless another folder is given)."""
    return (workspace or WORKSPACE_DIR) / f"{src.name}.ipynb"


def create(workspace: Path | None = None, out=print) -> list[Path]:
    """Write the exercise notebooks that are missing; keep (and only mention) those already there."""
    workspace = workspace or WORKSPACE_DIR
    workspace.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sources():
        path = workspace_path(src, workspace)
        if path.exists():
            stored = _stored_digest(path)
            changed = f" (the course's version changed: `make reset-exercise EX={src.number}`)"
            note = "" if stored == src.digest() else changed
            out(f"kept    {relative(path)}{note}")
            continue
        atomic_write_text(path, notebook_text(exercise_notebook(src)))
        written.append(path)
        out(f"created {relative(path)}")
    return written


def _stored_digest(path: Path) -> str:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["metadata"]["course_exercises"]["source_digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def find_source(number: str) -> Source:
    """The solution file of one notebook, by its number ('2', '02' or '02.sdpa')."""
    number = number.split(".")[0].zfill(2)
    for src in sources():
        if src.number == number:
            return src
    known = ", ".join(s.number for s in sources())
    raise WorkspaceError(f"no exercises for notebook {number!r}; they exist for {known}")


def reset(number: str, workspace: Path | None = None, out=print) -> Path:
    """Restore an exercise notebook (02), or one exercise in it (02.sdpa); the learner's copy goes to the backup."""
    workspace = workspace or WORKSPACE_DIR
    src = find_source(number)
    path = workspace_path(src, workspace)
    fresh = exercise_notebook(src)
    if path.exists():
        backup = workspace / BACKUP_DIR_NAME / f"{src.name}.{time.strftime('%Y%m%d-%H%M%S')}.ipynb"
        backup.parent.mkdir(parents=True, exist_ok=True)
        backup.write_bytes(path.read_bytes())
        out(f"your version is kept as {relative(backup)}")
        if "." in number:
            fresh = _with_one_exercise_reset(json.loads(path.read_text(encoding="utf-8")), fresh, number, src)
    workspace.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, notebook_text(fresh))
    out(f"restored {number if '.' in number else relative(path)} in {relative(path)}")
    return path


def _with_one_exercise_reset(mine: dict, fresh: dict, exercise_id: str, src: Source) -> dict:
    """The learner's notebook with the cells of one exercise (its stub and its check) replaced by fresh ones."""
    if exercise_id not in src.exercises:
        raise WorkspaceError(f"no exercise {exercise_id!r} in {relative(src.path)}; it has {', '.join(src.exercises)}")
    new_cells = {
        tuple(c.get("metadata", {}).get("tags", [])): c
        for c in fresh["cells"]
        if c.get("metadata", {}).get("exercise") == exercise_id
    }
    cells, found = [], False
    for cell in mine["cells"]:
        if cell.get("metadata", {}).get("exercise") == exercise_id:
            found = True
            cells.append(new_cells.get(tuple(cell.get("metadata", {}).get("tags", [])), cell))
        else:
            cells.append(cell)
    if not found:
        raise WorkspaceError(f"your notebook has no cells of {exercise_id}: reset the whole notebook ({src.number})")
    return {**mine, "cells": cells}


def solution_text(exercise_id: str) -> str:
    """The reference solution of one exercise, as code."""
    src = find_source(exercise_id)
    for cell in src.cells:
        if cell.exercise == exercise_id:
            return solution(cell)
    raise WorkspaceError(f"no exercise {exercise_id!r} in {relative(src.path)}; it has {', '.join(src.exercises)}")


# ---------------------------------------------------------------- headless grading


@dataclass
class Graded:
    """The grade of one exercise in one notebook."""

    notebook: str
    report: Report


EXERCISE_SECONDS = float(os.environ.get("COURSE_EXERCISE_SECONDS", "90"))  # per cell and per check


class OutOfTime(BaseException):  # a BaseException: a learner's `except Exception` cannot swallow it
    """A cell or a check ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise OutOfTime in the body after `seconds` (a no-op off the main thread or without SIGALRM)."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where(err: BaseException, cell: str) -> str:
    """The learner's cell and line an error comes from (a syntax error included), never the grader's own lines."""
    if isinstance(err, SyntaxError) and err.filename == cell:
        return f"{cell}, line {err.lineno}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == cell]
    return f"{cell}, line {frames[-1].lineno}" if frames else cell


def _run_cells(cells: list[tuple[str, str]], cwd: Path) -> tuple[dict, dict[str, str]]:
    """Execute (exercise id, code) cells in one namespace; return it and the error each failing cell raised."""
    namespace: dict = {"__name__": "__exercises__"}
    errors: dict[str, str] = {}
    old = Path.cwd()
    os.chdir(cwd)
    try:
        for i, (ex_id, code) in enumerate(cells):
            name = f"cell {i + 1}" + (f" ({ex_id})" if ex_id else "")
            try:
                with contextlib.redirect_stdout(io.StringIO()), time_limit(EXERCISE_SECONDS):
                    exec(compile(code, name, "exec"), namespace)  # noqa: S102 - running the learner's cells
            except OutOfTime:
                errors[ex_id or f"cell {i}"] = f"{name} ran longer than {EXERCISE_SECONDS:g} s (an endless loop?)"
            except Exception as e:  # noqa: BLE001 - reported as the exercise's failure
                errors[ex_id or f"cell {i}"] = f"the cell raised {type(e).__name__}: {e} ({_where(e, name)})"
    finally:
        os.chdir(old)
    return namespace, errors


def grade_cells(name: str, cells: list[tuple[str, str]], exercise_ids: list[str], cwd: Path) -> list[Graded]:
    """Run a notebook's cells (check cells excluded), then grade each exercise's function within the time limit."""
    exercises = load_checks()
    namespace, errors = _run_cells(cells, cwd)
    setup_errors = [msg for key, msg in errors.items() if key.startswith("cell ")]
    graded = []
    for ex_id in exercise_ids:
        ex = exercises[ex_id]
        if ex_id in errors or (setup_errors and ex.function not in namespace):
            report = Report(ex.id, ex.title, [CaseResult("the cell runs", False, errors.get(ex_id) or setup_errors[0])])
        elif ex.function not in namespace:
            report = Report(ex.id, ex.title, [CaseResult("the function exists", False, f"no `{ex.function}` defined")])
        else:
            limit = EXERCISE_SECONDS * ex.time_factor
            try:
                with time_limit(limit):
                    report = grade(ex_id, namespace[ex.function])
            except OutOfTime:
                detail = f"the check ran longer than {limit:g} s: does the function end (an endless loop)?"
                report = Report(ex.id, ex.title, [CaseResult("the function returns in time", False, detail)])
        graded.append(Graded(name, report))
    return graded


def grade_notebook(path: Path) -> list[Graded]:
    """Grade a workspace notebook: run its setup and exercise cells, then check each exercise."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        raw = nb["cells"]
    except (OSError, ValueError, KeyError) as e:
        raise WorkspaceError(f"{relative(path)} is not a readable notebook ({e})") from None
    cells, ids = [], []
    for cell in raw:
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {})
        ex_id = meta.get("exercise", "")
        if "check" in meta.get("tags", []):
            if ex_id and ex_id not in ids:
                ids.append(ex_id)
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        cells.append((ex_id, _without_magics(source)))
    return grade_cells(path.stem, cells, ids, path.parent)


def _without_magics(source: str) -> str:
    """Drop IPython magics and shell lines (`%time`, `!pip`), which plain Python cannot run."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def grade_source(src: Source) -> list[Graded]:
    """Grade the reference solutions of one solution file, through the same path as a workspace notebook."""
    cells = [(c.exercise, c.source) for c in src.cells if c.kind != "markdown"]
    return grade_cells(src.name, cells, src.exercises, src.path.parent)


def scoreboard_rows(graded: list[Graded]) -> list[str]:
    """One line per exercise (notebook, exercise, passed/failed), then its first failure in full, indented."""
    lines = []
    for g in graded:
        r = g.report
        lines.append(f"{g.notebook:32s} {r.exercise:22s} {'passed' if r.passed else 'failed':7s}".rstrip())
        if not r.passed:
            lines.append(f"    {r.first_failure}")
        lines += [f"    {line}" for c in r.cases for note in c.notes for line in note.splitlines()]
    return lines


def scoreboard(graded: list[Graded]) -> str:
    """The whole scoreboard: a header, the rows of scoreboard_rows, and the total."""
    header = f"{'notebook':32s} {'exercise':22s} {'result':7s} first failure"
    n_ok = sum(g.report.passed for g in graded)
    return "\n".join([header, "-" * 72, *scoreboard_rows(graded), f"\n{n_ok}/{len(graded)} exercises passed"])


def _to_json(graded: list[Graded]) -> str:
    """Grades as JSON, for a grading process to hand to its parent."""
    return json.dumps([{"notebook": g.notebook, "report": asdict(g.report)} for g in graded])


def _from_json(text: str) -> list[Graded]:
    """Grades back from _to_json."""
    out = []
    for item in json.loads(text):
        rep = item["report"]
        cases = [CaseResult(**c) for c in rep["cases"]]
        out.append(Graded(item["notebook"], Report(rep["exercise"], rep["title"], cases)))
    return out


def grade_in_fresh_process(path: Path, exercise_ids: list[str]) -> list[Graded]:
    """Grade one notebook in a new Python process: its global state cannot reach another notebook's grading."""
    checks = sum(load_checks()[i].time_factor for i in exercise_ids)
    limit = EXERCISE_SECONDS * (len(exercise_ids) + checks + 2) + 60  # every cell and check at its limit, and start-up
    cmd = [sys.executable, "-m", "grader.workspace", "grade-one", str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=PROJECT_ROOT)
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            return _from_json(lines[-1])
        problem = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        problem = f"grading {path.name} took longer than {limit:g} s"
    exercises = load_checks()
    return [
        Graded(path.stem, Report(i, exercises[i].title, [CaseResult("the notebook is graded", False, problem)]))
        for i in exercise_ids
    ]


def check_workspace(workspace: Path | None = None, show=None) -> list[Graded]:
    """Grade every exercise notebook of the workspace that exists, each in a fresh process; show(rows) as they come."""
    workspace = workspace or WORKSPACE_DIR
    if not workspace.is_dir():
        raise WorkspaceError(f"there is no {relative(workspace)}/ folder yet: run `make exercises` first")
    graded = []
    for src in sources():
        path = workspace_path(src, workspace)
        if path.exists():
            graded += grade_in_fresh_process(path, src.exercises)
            if show is not None:
                show(scoreboard_rows(graded[-len(src.exercises) :]))
    return graded


def check_solutions() -> list[Graded]:
    """Grade every reference solution."""
    return [g for src in sources() for g in grade_source(src)]


def main(argv: list[str] | None = None) -> int:
    """The command line behind `make exercises`, `make check`, `make check-solutions` and the reset."""
    parser = argparse.ArgumentParser(prog="python -m grader.workspace", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", help="make the exercise notebooks that are missing in exercises/")
    sub.add_parser("check", help="grade exercises/ and print a scoreboard")
    sub.add_parser("check-solutions", help="grade the reference solutions")
    sub.add_parser("list", help="list the exercises")
    p_one = sub.add_parser("grade-one", help=argparse.SUPPRESS)  # one notebook, grades as JSON (check's worker)
    p_one.add_argument("path", type=Path)
    p_reset = sub.add_parser("reset", help="restore a notebook (02) or one exercise (02.sdpa); yours goes to a backup")
    p_reset.add_argument("notebook", help="a notebook number, such as 02, or an exercise id, such as 02.sdpa")
    p_sol = sub.add_parser("solution", help="print the reference solution of one exercise")
    p_sol.add_argument("exercise", help="the exercise id, such as 02.sdpa")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            create()
            print(f"Open the notebooks in {relative(WORKSPACE_DIR)}/ (make lab); `make check` grades them all.")
        elif args.command == "list":
            exercises = load_checks()
            for src in sources():
                for ex_id in src.exercises:
                    print(f"{ex_id:<21} {src.name:<32} {exercises[ex_id].title}")
        elif args.command == "grade-one":
            print(_to_json(grade_notebook(args.path)))
        elif args.command == "check":
            print(f"{'notebook':32s} {'exercise':22s} {'result':7s} first failure\n" + "-" * 72)
            graded = check_workspace(show=lambda rows: print("\n".join(rows), flush=True))
            print(f"\n{sum(g.report.passed for g in graded)}/{len(graded)} exercises passed")
        elif args.command == "check-solutions":
            graded = check_solutions()
            print(scoreboard(graded))
            if not all(g.report.passed for g in graded):
                return 1
        elif args.command == "reset":
            reset(args.notebook)
        else:
            print(solution_text(args.exercise))
    except WorkspaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
