"""Run the whole course headless: every notebook in order with papermill, then HTML reports and a results table.

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
Each notebook runs against a staging copy of those artifacts (build/MODE/staging/NN_name/); only when it succeeds
are its new or changed figures, metrics and checkpoints moved in, file by file. A failed or interrupted
notebook leaves artifacts/, the results table and the README as they were, and its staging folder for inspection.
Ctrl-C interrupts the running cell, marks the partial executed copy as interrupted and exits with status 130.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat

from helpers.course.metrics import MetricRecorder, collect_metrics, format_value, sync_readme, write_results
from helpers.course.utils import (
    ARTIFACTS_ENV,
    COURSE_KERNEL,
    NOTEBOOKS_DIR,
    PROJECT_ROOT,
    artifacts_dir,
    atomic_write_text,
    relative,
)

KERNEL = "python3"
NOT_STAGED = ("quick", "tuning")  # folders of artifacts/ that a full-mode staging copy leaves out
RESUMABLE = "checkpoints/*_train_state.pt"  # training states a stopped run leaves to resume from (notebook 06)
INTERRUPT_GRACE_S = 10.0  # after Ctrl-C, how long the running cell gets to stop before the kernel is killed


class SelectionError(ValueError):
    """A notebook selection (--only, --from) or notebooks folder that names nothing, or more than one thing."""


class Interrupted(Exception):
    """The run was stopped by Ctrl-C (SIGINT) while a notebook was executing."""

    def __init__(self, cell_id: str | None):
        super().__init__("interrupted")
        self.cell_id = cell_id  # the id of the cell that was running (or about to run)


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
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def clean_for_commit(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop papermill's run metadata (timings, paths) so committed notebooks diff cleanly; name the course's kernel.

    The run itself uses the kernel of the running Python (KERNEL); JupyterLab opens the committed notebooks with the
    course's kernel, which `make lab` (or `make kernel`) registers.
    """
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = dict(COURSE_KERNEL)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    return nb


class _Run:
    """What the SIGINT handler needs to know about the notebook being executed."""

    km = None  # the kernel manager, once the kernel starts
    interrupted = False
    cell_id: str | None = None  # the cell that is running (or about to)
    timer: threading.Timer | None = None


def _kernel_manager_class(log_path: Path):
    """A kernel manager that remembers itself in _Run and sends the kernel's own output (not the cells') to a log."""
    from jupyter_client import AsyncKernelManager

    class CourseKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            _Run.km = self
            with open(log_path, "ab") as log:  # the kernel inherits the file; ours can close at once
                kw.setdefault("stdout", log)
                kw.setdefault("stderr", log)
                return await super().start_kernel(**kw)

    return CourseKernelManager


def _kernel_process(km):
    """Return the kernel's Popen object, or None."""
    return getattr(getattr(km, "provisioner", None), "process", None)


def _interrupt_kernel(km) -> bool:
    """Send SIGINT to a running kernel's process group (the cell raises KeyboardInterrupt); False if not possible."""
    proc, pgid = _kernel_process(km), getattr(getattr(km, "provisioner", None), "pgid", None)
    if proc is None or proc.poll() is not None or not pgid or not hasattr(os, "killpg"):
        return False
    try:
        os.killpg(pgid, signal.SIGINT)
    except OSError:
        return False
    return True


def _on_sigint(signum, frame) -> None:
    """First Ctrl-C: interrupt the running cell, stop before the next. Again (or after the grace time): stop at once."""
    first = not _Run.interrupted
    _Run.interrupted = True
    if first and _interrupt_kernel(_Run.km):
        _Run.timer = threading.Timer(INTERRUPT_GRACE_S, os.kill, (os.getpid(), signal.SIGINT))
        _Run.timer.daemon = True
        _Run.timer.start()
        return
    _stop_kernel(_Run.km)
    raise KeyboardInterrupt


def _stop_kernel(km) -> None:
    """Kill the kernel if it is still running (nbclient shuts it down itself unless the run was cut short)."""
    proc, pgid = _kernel_process(km), getattr(getattr(km, "provisioner", None), "pgid", None)
    if proc is not None and proc.poll() is None:
        if pgid and hasattr(os, "killpg"):
            try:
                os.killpg(pgid, signal.SIGKILL)  # the kernel and whatever its cells started
            except OSError:
                pass
        proc.kill()
        try:
            proc.wait(timeout=10)
        except Exception:
            pass


def declared_parameters(path: Path) -> str:
    """Return the source of a notebook's `parameters` cell ("" when it has none)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cells[0] if cells else ""


def execute(
    path: Path,
    out_path: Path,
    mode: str,
    timeout: int | None,
    kernel_log: Path | None = None,
    reuse_checkpoints: bool = False,
) -> None:
    """Execute one notebook with papermill in the notebooks folder, as JupyterLab and nbval do.

    With reuse_checkpoints, a notebook whose parameters declare `reuse_checkpoint` loads its saved model instead of
    training (when the checkpoint exists).

    Raises Interrupted after Ctrl-C, once the kernel is shut down; papermill's errors for a failing cell.
    """
    import logging

    import papermill as pm

    def on_cell_execute(cell, cell_index):
        _Run.cell_id = cell.get("id")
        if _Run.interrupted:  # Ctrl-C came between cells: run no more of them
            raise Interrupted(_Run.cell_id)

    parameters = {"mode": "quick"} if mode == "quick" else {}
    if reuse_checkpoints and "reuse_checkpoint" in declared_parameters(path):
        parameters["reuse_checkpoint"] = True
    kernel_log = kernel_log or out_path.with_suffix(".kernel.log")
    kernel_log.parent.mkdir(parents=True, exist_ok=True)
    kernel_log.write_bytes(b"")
    _Run.km, _Run.interrupted, _Run.cell_id, _Run.timer = None, False, None, None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_sigint) if main_thread else None
    try:
        pm.execute_notebook(
            str(path),
            str(out_path),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(path.parent),
            progress_bar=False,
            log_output=False,
            execution_timeout=timeout,
            kernel_manager_class=_kernel_manager_class(kernel_log),
            on_cell_execute=on_cell_execute,
        )
    except KeyboardInterrupt:  # a second Ctrl-C: papermill has saved the cells run so far
        _Run.interrupted = True
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the abandoned cell's task is not news
    except Exception:
        if not _Run.interrupted:
            raise
    finally:
        if _Run.timer is not None:
            _Run.timer.cancel()
        if main_thread:
            signal.signal(signal.SIGINT, previous)
        _stop_kernel(_Run.km)
    if _Run.interrupted:
        raise Interrupted(_Run.cell_id)


def mark_interrupted(notebook: Path, out_path: Path, cell_id: str | None) -> int | None:
    """Say at the top of a partial executed copy that Ctrl-C stopped it, and above the cell it stopped in.

    Returns that cell's number in the notebook (counting from 1), or None if it is not known.
    """
    source_ids = [c.get("id") for c in nbformat.read(notebook, as_version=4).cells]
    number = source_ids.index(cell_id) + 1 if cell_id is not None and cell_id in source_ids else None
    if not out_path.exists():
        return number
    nb = nbformat.read(out_path, as_version=4)
    where = f" in cell {number} of {relative(notebook)} (marked below)" if number else ""
    note = nbformat.v4.new_markdown_cell(
        f"**Interrupted**: `run_all.py` was stopped by Ctrl-C{where}. This copy is partial: that cell did not "
        "finish and the cells after it did not run. Nothing the run wrote reached the artifacts folder."
    )
    here = nbformat.v4.new_markdown_cell(
        "**Interrupted here** (Ctrl-C): this cell did not finish; the cells below did not run."
    )
    for cell in (note, here):
        cell.metadata["tags"] = ["run_all-interrupted"]
    at = [i for i, c in enumerate(nb.cells) if cell_id is not None and c.get("id") == cell_id]
    if at:
        nb.cells.insert(at[0], here)
    nb.cells.insert(0, note)
    atomic_write_text(out_path, nbformat.writes(nb) + "\n")
    return number


# ---- staging: each notebook writes into a copy of artifacts/; success moves its changes in ----------------------


def files_under(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """Map each file below a folder (relative POSIX path) to its path, leaving out top-level `skip` and temporaries."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or path.name.endswith(".tmp") or not path.is_file():
            continue
        found[rel.as_posix()] = path
    return found


def mode_tree(root: Path, mode: str) -> tuple[Path, tuple[str, ...]]:
    """Return a run mode's folder below an artifacts root, and the folders in it that belong to nothing staged."""
    return (root, NOT_STAGED) if mode == "full" else (root / "quick", ())


def _copy(src: Path, dest: Path) -> None:
    """Copy a file into place atomically (a temporary file beside it, then a rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True


def prepare_stage(real_root: Path, stage_root: Path, mode: str, notebook: str) -> set[str]:
    """Fill a staging folder with a copy of the artifacts a notebook may read; return the mode's files copied.

    Full mode copies artifacts/ without quick/ and tuning/; quick mode copies that too (notebook 09 reads the full
    char-GPT checkpoint) and artifacts/quick/. The notebook's metric file is left out, so its metrics start afresh.
    A training state that an earlier failed or interrupted run left in its staging folder is carried over.
    """
    previous = stage_root.with_name(stage_root.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if stage_root.exists():
        os.replace(stage_root, previous)
    for rel, src in files_under(real_root, NOT_STAGED).items():
        _copy(src, stage_root / rel)
    tree, skip = mode_tree(stage_root, mode)
    if mode == "quick":
        for rel, src in files_under(real_root / "quick").items():
            _copy(src, tree / rel)
    tree.mkdir(parents=True, exist_ok=True)
    copied = set(files_under(tree, skip))
    old_tree, _ = mode_tree(previous, mode)
    for state in old_tree.glob(RESUMABLE):
        dest = tree / state.relative_to(old_tree)
        if not dest.exists() or state.stat().st_mtime > dest.stat().st_mtime:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(state, dest)
    shutil.rmtree(previous, ignore_errors=True)
    (tree / "metrics" / f"{notebook}.json").unlink(missing_ok=True)
    return copied


def promote(stage_root: Path, real_root: Path, mode: str, copied: set[str]) -> list[str]:
    """Move a successful notebook's new and changed files into the real artifacts and delete the ones it deleted."""
    src_tree, skip = mode_tree(stage_root, mode)
    dest_tree, _ = mode_tree(real_root, mode)
    staged = files_under(src_tree, skip)
    changed = []
    for rel, src in staged.items():
        dest = dest_tree / rel
        if not (dest.is_file() and _same_bytes(src, dest)):
            _copy(src, dest)
            changed.append(rel)
    for rel in sorted(copied - staged.keys()):
        if (dest_tree / rel).is_file():
            (dest_tree / rel).unlink()
            changed.append(rel)
    return changed


def run_copy(committed: Path, copy: Path, fresh: bool) -> Path:
    """Return a full run's own artifacts folder, a copy of the committed one (made afresh when `fresh` or missing).

    A plain full run writes its figures, metrics, checkpoints and results table there, so that the committed
    results, and the README that quotes them, change only when a maintainer runs with --write-back.
    """
    if fresh or not copy.exists():
        shutil.rmtree(copy, ignore_errors=True)
        for rel, src in files_under(committed, NOT_STAGED).items():
            _copy(src, copy / rel)
        copy.mkdir(parents=True, exist_ok=True)
    return copy


@contextmanager
def sigint_deferred():
    """Hold Ctrl-C back until the block ends, so that moving results into artifacts/ is not cut half-way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def export_html(executed: Path, html_dir: Path) -> Path:
    """Export an executed notebook to a standalone HTML report."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_filename(str(executed))
    return atomic_write_text(html_dir / f"{executed.stem}.html", body)


def write_index(html_dir: Path, rows: list[dict], mode: str) -> Path:
    """Write an index page that links every report, with its status and run time."""
    metrics = collect_metrics(mode)
    items = []
    for r in rows:
        link = f'<a href="{r["name"]}.html">{html.escape(r["title"])}</a>' if r.get("html") else html.escape(r["title"])
        items.append(
            f"<tr><td>{r['name'][:2]}</td><td>{link}</td><td>{r['status']}</td><td>{r['seconds']:.0f} s</td></tr>"
        )
    metric_rows = "".join(
        f"<tr><td><code>{html.escape(k)}</code></td><td>{format_value(m['value'])}</td><td>{html.escape(m['unit'])}</td>"
        f"<td>{html.escape(m['description'])}</td></tr>"
        for k, m in metrics.items()
    )
    title = f"Transformers from scratch: reports ({mode})"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.3em .8em;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Transformers from scratch: notebook reports</h1><p>Mode: <b>{mode}</b>. Generated by <code>run_all.py</code>.</p>
<table><tr><th>#</th><th>notebook</th><th>status</th><th>time</th></tr>{"".join(items)}</table>
<h2>Key figures</h2><table><tr><th>metric</th><th>value</th><th>unit</th><th>what it is</th></tr>{metric_rows}</table>
</body></html>"""
    return atomic_write_text(html_dir / "index.html", page)


def build_site(executed_dir: Path, out: Path) -> None:
    """Build the course website from this run's executed notebooks (website/build_site.py); a failure only warns."""
    cmd = [sys.executable, str(PROJECT_ROOT / "website" / "build_site.py"), "--notebooks", str(executed_dir)]
    result = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True)
    if result.returncode == 0:
        print(result.stdout.strip())
    else:
        print(f"the website was not built: {result.stderr.strip()[-500:]}", file=sys.stderr)


def report_failure(path: Path, out_path: Path, err: Exception, stage: Path | None = None) -> None:
    """Print which notebook and cell failed, with the error and where the partial copy is."""
    cell = getattr(err, "exec_count", None)
    index = getattr(err, "cell_index", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    print(f"\nFAILED: {relative(path)}", file=sys.stderr)
    if index is not None:
        print(f"  cell: index {index} (execution count {cell})", file=sys.stderr)
    print(f"  error: {ename}: {evalue}", file=sys.stderr)
    print(f"  partially executed copy: {relative(out_path)}", file=sys.stderr)
    if stage is not None and stage.exists():
        print(f"  what it wrote (artifacts/ unchanged): {relative(stage)}", file=sys.stderr)


def record_run_times(rows: list[dict], total_seconds: float, mode: str) -> None:
    """Record the run time of a complete course run (every notebook, none failed) among the results."""
    recorder = MetricRecorder("00_run_all", mode, fresh=True)
    recorder.record(
        "run_all.total_minutes",
        total_seconds / 60,
        "min",
        f"one uninterrupted `python run_all.py{' --quick' if mode == 'quick' else ''}`: "
        f"{len(rows)} notebooks and their HTML reports",
    )
    for r in rows:
        recorder.record(f"run_all.seconds_{r['name'][:2]}", r["seconds"], "s", f"{r['name']}, executed by papermill")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the selected notebooks and write the reports; return the exit status."""
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
        help="notebooks that train (06, 08) load their saved checkpoint instead of training again",
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
        notebooks = select(discover(args.notebooks_dir), args.only, args.start)
    except SelectionError as err:
        parser.error(str(err))  # exit status 2, like every other bad option
    if args.list:
        for p in notebooks:
            print(f"{p.name:45s} {title_of(p)}")
        return 0
    if not notebooks:
        print(f"no notebooks found in {relative(args.notebooks_dir)}", file=sys.stderr)
        return 1

    from tqdm import tqdm

    mode = "quick" if args.quick else "full"
    # The artifacts: $COURSE_ARTIFACTS_DIR, else the artifacts/ folder beside the notebooks (a test course has its own).
    if not os.environ.get(ARTIFACTS_ENV):
        os.environ[ARTIFACTS_ENV] = str(args.notebooks_dir.resolve().parent / "artifacts")
    real_root = artifacts_dir("full").resolve()
    if mode == "full" and not args.write_back:  # the committed results change only with --write-back
        real_root = run_copy(
            real_root, (args.build_dir / "full" / "artifacts").resolve(), fresh=not args.only and not args.start
        )
    os.environ[ARTIFACTS_ENV] = str(real_root)
    os.environ["COURSE_MODE"] = mode  # notebooks that read their mode from the environment agree with the run
    executed_dir, html_dir = args.build_dir / mode / "executed", args.build_dir / mode / "html"
    executed_dir.mkdir(parents=True, exist_ok=True)
    rows, failed, changed = [], [], []
    interrupted = None
    started = time.perf_counter()
    # A live bar on a terminal; in a log (CI, nohup) only the one line per notebook below.
    bar = tqdm(
        notebooks, desc=f"{mode} run", unit="nb", file=sys.stdout, dynamic_ncols=True, disable=not sys.stdout.isatty()
    )
    current = None  # (notebook, executed copy, staging folder, whether it has finished) while one is under way
    try:
        for path in bar:
            bar.set_postfix_str(path.stem)
            out_path = executed_dir / path.name
            stage = (args.build_dir / mode / "staging" / path.stem).resolve()
            current = (path, out_path, stage, False)
            out_path.unlink(missing_ok=True)  # an older run's copy must not pass for this one's
            t0 = time.perf_counter()
            row = {"name": path.stem, "title": title_of(path), "status": "ok"}
            try:
                copied = prepare_stage(real_root, stage, mode, path.stem)
                os.environ[ARTIFACTS_ENV] = str(stage)  # the kernel inherits it: the notebook writes into the copy
                try:
                    execute(
                        path,
                        out_path,
                        mode,
                        args.timeout,
                        args.build_dir / mode / "kernel_logs" / f"{path.stem}.log",
                        reuse_checkpoints=args.reuse_checkpoints,
                    )
                finally:
                    os.environ[ARTIFACTS_ENV] = str(real_root)
            except Interrupted as stop:
                interrupted = (path, out_path, stage, stop.cell_id)
                break
            except Exception as err:  # papermill raises PapermillExecutionError; a dead kernel raises others
                row["status"] = "FAILED"
                failed.append(path)
                report_failure(path, out_path, err, stage)
            else:
                with sigint_deferred():
                    changed += promote(stage, real_root, mode, copied)
                    shutil.rmtree(stage, ignore_errors=True)
            current = (path, out_path, stage, True)
            row["seconds"] = time.perf_counter() - t0
            bar.write(f"{row['status']:>6}  {path.name:45s} {row['seconds']:7.1f} s")
            if row["status"] == "ok" and args.write_back:
                nbformat.write(clean_for_commit(nbformat.read(out_path, as_version=4)), path)
            if out_path.exists() and not args.no_html:
                export_html(out_path, html_dir)
                row["html"] = True
            rows.append(row)
            current = None
            if failed and not args.keep_going:
                break
    except KeyboardInterrupt:  # Ctrl-C outside a cell: while staging, promoting or exporting HTML
        if current is None:
            raise
        path, out_path, stage, finished = current
        interrupted = (path, out_path, stage, None) if not finished else (path, None, stage, None)
    finally:
        bar.close()

    succeeded = len(rows) - len(failed)
    complete = not failed and not interrupted and not args.only and not args.start  # the whole course ran and passed
    if complete and not args.reuse_checkpoints and args.notebooks_dir.resolve() == NOTEBOOKS_DIR.resolve():
        record_run_times(rows, time.perf_counter() - started, mode)
    if succeeded or changed:  # the merged results follow the metric files; a failed notebook's are as they were
        with sigint_deferred():
            json_path, md_path = write_results(mode)
            readme = args.notebooks_dir.parent / "README.md"
            if args.write_back and readme.exists() and "<!-- results:start -->" in readme.read_text():
                sync_readme(readme, mode)
    if interrupted:
        path, out_path, stage, cell_id = interrupted
        if out_path is None:  # it had run to the end
            print(f"\ninterrupted after {relative(path)} ran", file=sys.stderr)
            return 130
        number = mark_interrupted(path, out_path, cell_id)
        partial = f"partial copy: {relative(out_path)}" if out_path.exists() else "no partial copy"
        print(f"\ninterrupted: {relative(path)}{f' in cell {number}' if number else ''}; {partial}", file=sys.stderr)
        if stage.exists():
            print(
                f"  {relative(real_root)} unchanged; what the notebook wrote is in {relative(stage)}", file=sys.stderr
            )
        return 130
    timings = {r["name"]: {"seconds": round(r["seconds"], 1), "status": r["status"]} for r in rows}
    atomic_write_text(args.build_dir / mode / "timings.json", json.dumps(timings, indent=2) + "\n")
    print(f"\n{succeeded}/{len(rows)} notebooks ran in {time.perf_counter() - started:.0f} s ({mode} mode)")
    if succeeded:
        print(f"results: {relative(md_path)}, {relative(json_path)}")
    else:
        print("results: unchanged (no notebook succeeded)")
    if not args.no_html:
        print(f"reports: {relative(write_index(html_dir, rows, mode))}")
        if complete and args.notebooks_dir.resolve() == NOTEBOOKS_DIR.resolve():
            build_site(executed_dir, args.build_dir / "site" if mode == "full" else args.build_dir / mode / "site")
    skipped = len(notebooks) - len(rows)
    if failed:
        print(
            f"failed: {', '.join(p.name for p in failed)}" + (f"; {skipped} not run" if skipped else ""),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C outside a notebook's execution (between notebooks, during the HTML export)
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # a folder that cannot be written, a disk that is full
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
