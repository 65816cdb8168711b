"""Run the whole course headless: every notebook in order with papermill, then a results table and the website.

    python run_all.py                 # full run: executed copies and HTML under build/full/
    python run_all.py --quick         # small settings, every cell still runs: build/quick/
    python run_all.py --only 03 05    # a selection (by number or name); --from 06 starts there
    python run_all.py --list          # show the notebooks and stop
    python run_all.py --write-back    # full run, then save the executed notebooks over notebooks/ (for committing)
    python run_all.py --only 06 --reuse-checkpoints   # load the saved model instead of training it again

A complete run with HTML also builds the course website from its executed notebooks into build/site/
(quick mode: build/quick/site/).

A full run works on its own copy of the committed artifacts, build/full/artifacts/, and leaves artifacts/ and the
README alone; --write-back (for maintainers, to commit a run) writes into artifacts/ and the README instead.
Each notebook writes into a staging copy and its results are moved in only when it succeeds
(helpers/course/runner.py): a failed or interrupted notebook changes no committed result.
Ctrl-C interrupts the running cell, marks the partial executed copy as interrupted and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat

from helpers.course import runner
from helpers.course.metrics import sync_readme, write_results
from helpers.course.utils import ARTIFACTS_ENV, NOTEBOOKS_DIR, PROJECT_ROOT, artifacts_dir, atomic_write_text, relative


class SelectionError(ValueError):
    """A notebook selection (--only, --from) or notebooks folder that names nothing, or more than one thing."""


def discover(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Return the course notebooks (NN_name.ipynb) in their numbered order."""
    if not folder.is_dir():
        raise SelectionError(f"no notebooks folder at {folder}")
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def resolve(notebooks: list[Path], key: str, option: str = "--only") -> Path:
    """Return the one notebook a key names: its number (1, 01), its name (06_char_gpt) or a unique name prefix."""
    name = Path(key).name.removesuffix(".ipynb")
    if name.isdigit():
        hits = [p for p in notebooks if int(p.stem[:2]) == int(name)]
        what = f"no notebook is numbered {int(name):02d}"
    else:
        hits = [p for p in notebooks if p.stem == name]
        if not hits:
            hits = [p for p in notebooks if name and (p.stem.startswith(name) or p.stem[3:].startswith(name))]
        what = "no notebook matches it"
    if not hits:
        raise SelectionError(f"{option} {key}: {what}; see --list")
    if len(hits) > 1:
        raise SelectionError(f"{option} {key} is ambiguous: it matches {', '.join(p.stem for p in hits)}")
    return hits[0]


def select(notebooks: list[Path], only: list[str] | None, start: str | None) -> list[Path]:
    """Keep the notebooks named by --only (numbers match exactly) and those from --from on."""
    chosen = notebooks
    if only:
        picked = {resolve(notebooks, k, "--only") for k in only}
        chosen = [p for p in chosen if p in picked]
    if start:
        first = resolve(notebooks, start, "--from")
        chosen = [p for p in chosen if p.name >= first.name]
    return chosen


def title_of(path: Path) -> str:
    """Return the first Markdown heading of a notebook (or its file name)."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; a bad one exits with status 2."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings; every cell still runs")
    parser.add_argument("--only", nargs="+", metavar="NB", help="run only these notebooks (number or name)")
    parser.add_argument("--from", dest="start", metavar="NB", help="start at this notebook")
    parser.add_argument("--list", action="store_true", help="list the notebooks and exit")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML export")
    parser.add_argument("--keep-going", action="store_true", help="run later notebooks after a failure")
    parser.add_argument("--write-back", action="store_true", help="save executed notebooks over notebooks/ (full mode)")
    parser.add_argument(
        "--reuse-checkpoints",
        action="store_true",
        help="notebooks that train (06, 08, 11) load their saved checkpoint instead of training again",
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    parser.add_argument(
        "--build-dir", type=Path, default=PROJECT_ROOT / "build", help="where executed copies and HTML go"
    )
    args = parser.parse_args(argv)
    if args.write_back and args.quick:
        parser.error("--write-back saves full-mode outputs only; drop --quick")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    try:
        args.notebooks = select(discover(args.notebooks_dir), args.only, args.start)
    except SelectionError as err:
        parser.error(str(err))  # exit status 2, like every other bad option
    return args


def artifacts_root(args: argparse.Namespace, mode: str) -> Path:
    """Where this run's results go: artifacts/ (quick mode, --write-back) or a full run's own copy of it."""
    # $COURSE_ARTIFACTS_DIR, else the artifacts/ folder beside the notebooks (a test course has its own).
    if not os.environ.get(ARTIFACTS_ENV):
        os.environ[ARTIFACTS_ENV] = str(args.notebooks_dir.resolve().parent / "artifacts")
    root = artifacts_dir("full").resolve()
    if mode == "full" and not args.write_back:  # the committed results change only with --write-back
        fresh = not args.only and not args.start
        root = runner.run_copy(root, (args.build_dir / "full" / "artifacts").resolve(), fresh=fresh)
    os.environ[ARTIFACTS_ENV] = str(root)
    os.environ["COURSE_MODE"] = mode  # notebooks that read their mode from the environment agree with the run
    return root


def run_chain(notebooks: list[Path], s: runner.Settings, keep_going: bool) -> tuple[list[dict], object]:
    """Run the notebooks in order; stop at the first failure (unless keep_going) or at Ctrl-C."""
    rows = []
    for path in notebooks:
        try:
            row = runner.run_notebook(path, s, ARTIFACTS_ENV)
        except runner.NotebookInterrupted as stop:
            return rows, stop
        print(f"{row['status']:>6}  {path.name:45s} {row['seconds']:7.1f} s", flush=True)
        rows.append(row)
        if row["status"] != "ok" and not keep_going:
            break
    return rows, None


def summarize(args, s: runner.Settings, rows: list[dict], stop, seconds: float) -> int:
    """Write the results table (and the README's, with --write-back), print the summary; return the exit status."""
    failed = [r["name"] for r in rows if r["status"] != "ok"]
    succeeded = len(rows) - len(failed)
    complete = not failed and not stop and not args.only and not args.start  # the whole course ran and passed
    ours = args.notebooks_dir.resolve() == NOTEBOOKS_DIR.resolve()
    if complete and not args.reuse_checkpoints and ours:
        runner.record_run_times(rows, seconds, s.mode)
    results = None
    if succeeded or any(r["changed"] for r in rows):  # the merged results follow the metric files
        try:
            with runner.sigint_deferred():
                results = write_results(s.mode)
                readme = args.notebooks_dir.parent / "README.md"
                if args.write_back and readme.exists() and "<!-- results:start -->" in readme.read_text():
                    sync_readme(readme, s.mode)
        except OSError as err:
            print(f"the results table was not written: {err}", file=sys.stderr)
    if stop is not None:
        return interrupted(stop, s)
    timings = {r["name"]: {"seconds": round(r["seconds"], 1), "status": r["status"]} for r in rows}
    try:
        atomic_write_text(args.build_dir / s.mode / "timings.json", json.dumps(timings, indent=2) + "\n")
    except OSError as err:
        print(f"the timings were not written: {err}", file=sys.stderr)
    print(f"\n{succeeded}/{len(rows)} notebooks ran in {seconds:.0f} s ({s.mode} mode)")
    print(f"results: {relative(results[1])}, {relative(results[0])}" if results else "results: unchanged")
    if complete and s.html and ours:
        runner.build_site(
            s.executed_dir, args.build_dir / "site" if s.mode == "full" else args.build_dir / "quick" / "site"
        )
    if failed:
        skipped = len(args.notebooks) - len(rows)
        print(f"failed: {', '.join(failed)}" + (f"; {skipped} not run" if skipped else ""), file=sys.stderr)
        return 1
    return 0


def interrupted(stop: runner.NotebookInterrupted, s: runner.Settings) -> int:
    """Say where Ctrl-C stopped the run (and mark the partial copy); return 130."""
    if stop.out_path is None:  # it had run to the end
        print(f"\ninterrupted after {relative(stop.path)} ran", file=sys.stderr)
        return 130
    number = runner.mark_interrupted(stop.path, stop.out_path, stop.cell_id)
    partial = f"partial copy: {relative(stop.out_path)}" if stop.out_path.exists() else "no partial copy"
    print(f"\ninterrupted: {relative(stop.path)}{f' in cell {number}' if number else ''}; {partial}", file=sys.stderr)
    if stop.stage.exists():
        print(
            f"  {relative(s.real_root)} unchanged; what the notebook wrote is in {relative(stop.stage)}",
            file=sys.stderr,
        )
    return 130


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the selected notebooks and summarise; return the exit status."""
    args = parse_args(argv)
    if args.list:
        for p in args.notebooks:
            print(f"{p.name:45s} {title_of(p)}")
        return 0
    if not args.notebooks:
        print(f"no notebooks found in {relative(args.notebooks_dir)}", file=sys.stderr)
        return 1
    mode = "quick" if args.quick else "full"
    with runner.BuildLock(args.build_dir / mode):
        s = runner.Settings(mode, args.build_dir, artifacts_root(args, mode), args)
        with runner.BuildLock(runner.mode_tree(s.real_root, mode)[0]):  # quick runs share artifacts/quick/
            started = time.perf_counter()
            rows, stop = run_chain(args.notebooks, s, args.keep_going)
            return summarize(args, s, rows, stop, time.perf_counter() - started)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C outside a notebook's execution
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except (OSError, runner.BuildFolderBusy) as err:  # a folder that cannot be written, a busy build folder
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
