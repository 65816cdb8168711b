"""How run_all.py runs one notebook: papermill in a kernel it can interrupt, staging, promotion, the reports.

Each notebook runs against a staging copy of the artifacts (build/MODE/staging/NN_name/); only when it succeeds are
its new or changed figures, metrics and checkpoints moved into the artifacts, file by file, and only by the run that
staged them. One run at a time holds a build folder (BuildLock): a second run on the same folder stops at once.
A failed or interrupted notebook leaves the artifacts as they were, and its staging folder for inspection.
Ctrl-C interrupts the running cell; the partial executed copy is marked as interrupted.
"""

from __future__ import annotations

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

from helpers.course.metrics import MetricRecorder
from helpers.course.utils import COURSE_KERNEL, PROJECT_ROOT, STAGE_MARK, atomic_write_text, relative

KERNEL = "python3"
NOT_STAGED = ("quick", "tuning")  # folders of artifacts/ that a full-mode staging copy leaves out
RESUMABLE = "checkpoints/*_train_state.pt"  # training states a stopped run leaves to resume from (notebook 06)
INTERRUPT_GRACE_S = 10.0  # after Ctrl-C, how long the running cell gets to stop before the kernel is killed
LOCK_NAME = ".run_all.lock"  # in a build folder: the process id of the run that holds it


class Interrupted(Exception):
    """The run was stopped by Ctrl-C (SIGINT) while a notebook was executing."""

    def __init__(self, cell_id: str | None):
        super().__init__("interrupted")
        self.cell_id = cell_id  # the id of the cell that was running (or about to run)


class BuildFolderBusy(RuntimeError):
    """Another run_all.py holds the build folder."""


# ---- one run per build folder ---------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """True if a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BuildLock:
    """Hold a build folder for this process: a lock file made with O_EXCL; a lock left by a dead run is taken over."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self.path.read_text().strip()
                if holder.isdigit() and _alive(int(holder)) and int(holder) != os.getpid():
                    raise BuildFolderBusy(
                        f"{relative(self.path.parent)} is in use by another run_all.py (process {holder}); "
                        f"wait for it to end, or give this run its own --build-dir"
                    ) from None
                self.path.unlink(missing_ok=True)  # left by a run that no longer exists
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise BuildFolderBusy(f"{relative(self.path)} could not be taken")

    def __exit__(self, *exc) -> None:
        if self.path.is_file() and self.path.read_text().strip() == str(os.getpid()):
            self.path.unlink()


# ---- executing one notebook -----------------------------------------------------------------------------------------


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


# ---- staging: each notebook writes into a copy of the artifacts; success moves its changes in -------------------


def files_under(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """Map each file below a folder (relative POSIX path) to its path, leaving out top-level `skip` and temporaries."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or path.name.endswith(".tmp") or path.name in (STAGE_MARK, LOCK_NAME):
            continue
        if not path.is_file():
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
    (stage_root / STAGE_MARK).write_text(str(os.getpid()))
    return copied


def promote(stage_root: Path, real_root: Path, mode: str, copied: set[str]) -> list[str]:
    """Move a successful notebook's new and changed files into the real artifacts and delete the ones it deleted.

    Only the run that staged the folder promotes it: a folder that another run replaced or removed raises.
    """
    mark = stage_root / STAGE_MARK
    if not mark.is_file() or mark.read_text().strip() != str(os.getpid()):
        raise RuntimeError(f"{relative(stage_root)} was changed by another run: nothing was promoted from it")
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
    """Export an executed notebook to a standalone HTML report (a notebook that cannot be read raises)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_filename(str(executed))
    return atomic_write_text(html_dir / f"{executed.stem}.html", body)


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


# ---- one notebook of the chain, from staging to reports -------------------------------------------------------------


class Settings:
    """What every notebook of one run shares: the mode, the folders and the options."""

    def __init__(self, mode: str, build_dir: Path, real_root: Path, args):
        self.mode, self.build_dir, self.real_root = mode, build_dir, real_root
        self.executed_dir, self.html_dir = build_dir / mode / "executed", build_dir / mode / "html"
        self.timeout, self.reuse, self.write_back = args.timeout, args.reuse_checkpoints, args.write_back
        self.html = not args.no_html
        self.executed_dir.mkdir(parents=True, exist_ok=True)


class NotebookInterrupted(Exception):
    """Ctrl-C stopped a notebook; carries what the summary needs to say where."""

    def __init__(self, path: Path, out_path: Path | None, stage: Path, cell_id: str | None):
        super().__init__("interrupted")
        self.path, self.out_path, self.stage, self.cell_id = path, out_path, stage, cell_id


def run_notebook(path: Path, s: Settings, artifacts_env: str) -> dict:
    """Stage, execute, promote (on success), write back and export one notebook; return its row for the summary.

    Raises NotebookInterrupted after Ctrl-C (out_path None when the notebook had already finished).
    """
    out_path = s.executed_dir / path.name
    stage = (s.build_dir / s.mode / "staging" / path.stem).resolve()
    out_path.unlink(missing_ok=True)  # an older run's copy must not pass for this one's
    t0, row = time.perf_counter(), {"name": path.stem, "status": "ok", "changed": []}
    try:
        copied = prepare_stage(s.real_root, stage, s.mode, path.stem)
        os.environ[artifacts_env] = str(stage)  # the kernel inherits it: the notebook writes into the copy
        try:
            log = s.build_dir / s.mode / "kernel_logs" / f"{path.stem}.log"
            execute(path, out_path, s.mode, s.timeout, log, reuse_checkpoints=s.reuse)
        finally:
            os.environ[artifacts_env] = str(s.real_root)
        with sigint_deferred():
            row["changed"] = promote(stage, s.real_root, s.mode, copied)
            shutil.rmtree(stage, ignore_errors=True)
    except Interrupted as stop:
        raise NotebookInterrupted(path, out_path, stage, stop.cell_id) from None
    except KeyboardInterrupt:  # Ctrl-C outside a cell: while staging or promoting
        raise NotebookInterrupted(path, out_path, stage, None) from None
    except Exception as err:  # papermill raises PapermillExecutionError; a dead kernel or a full disk raise others
        row["status"] = "FAILED"
        report_failure(path, out_path, err, stage)
    try:
        _write_back_and_export(path, out_path, row, s)
    except KeyboardInterrupt:
        raise NotebookInterrupted(path, None, stage, None) from None
    row["seconds"] = time.perf_counter() - t0
    return row


def _write_back_and_export(path: Path, out_path: Path, row: dict, s: Settings) -> None:
    """Save a successful run over the committed notebook (--write-back), then its HTML report; failures are reported."""
    try:
        if row["status"] == "ok" and s.write_back:
            nbformat.write(clean_for_commit(nbformat.read(out_path, as_version=4)), path)
    except Exception as err:  # a full disk, say: the committed notebook keeps its old outputs
        row["status"] = "FAILED"
        print(f"\nFAILED: {relative(path)} was not written back ({type(err).__name__}: {err})", file=sys.stderr)
    try:
        if out_path.exists() and s.html:
            export_html(out_path, s.html_dir)
    except Exception as err:  # a truncated copy cannot be exported: say so, and go on to the summary
        print(f"  no HTML report for {path.name}: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
