"""Paths, run mode, device selection, seeding, shape checks and atomic writes (introduced in 01_attention_by_hand)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

ROOT_ENV = "COURSE_ROOT"  # the folder that holds data/, artifacts/ and notebooks/, for an installed course


def project_root() -> Path:
    """The course's folder: $COURSE_ROOT, else the checkout this file lies in, else (an installed course, as in Colab
    or `pip install .`) the working folder, where data/ and artifacts/ then live."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "helpers" / "course").is_dir():
        return checkout
    return Path.cwd().resolve()


PROJECT_ROOT = project_root()
DATA_DIR = PROJECT_ROOT / "data"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
MODES = ("quick", "full")
# The Jupyter kernel that `make kernel` registers; committed and exercise notebooks name it.
COURSE_KERNEL = {"name": "transformers-course", "display_name": "Python (transformers-course)", "language": "python"}


def default_mode() -> str:
    """Return the run mode from the COURSE_MODE environment variable ("full" when unset)."""
    mode = os.environ.get("COURSE_MODE", "full")
    if mode not in MODES:
        raise ValueError(f"COURSE_MODE must be one of {MODES}, got {mode!r}")
    return mode


ARTIFACTS_ENV = "COURSE_ARTIFACTS_DIR"  # a folder used instead of artifacts/ (run_all.py points it at a staging copy)


def artifacts_dir(mode: str = "full") -> Path:
    """Return the folder for figures, metrics and checkpoints of a run mode (quick runs never overwrite full ones).

    That is artifacts/ (quick mode: artifacts/quick/), or $COURSE_ARTIFACTS_DIR in its place when set (a relative
    path is taken from the project root).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    root = PROJECT_ROOT / os.path.expanduser(os.environ.get(ARTIFACTS_ENV) or "artifacts")
    path = root if mode == "full" else root / "quick"
    path.mkdir(parents=True, exist_ok=True)
    return path


STAGE_MARK = ".staged-by"  # in a staging folder of run_all.py: the process id of the run that staged it


def relative(path: Path | str) -> str:
    """Show a path relative to the project root, so outputs carry no machine-specific prefix.

    A path inside run_all.py's staging copy of artifacts/ is shown where the run puts it when the notebook succeeds
    (artifacts/...), so an executed notebook names the real file, not the run's scaffolding.
    """
    path = Path(path).resolve()
    staged = os.environ.get(ARTIFACTS_ENV)
    if staged:
        root = (PROJECT_ROOT / os.path.expanduser(staged)).resolve()
        if (root / STAGE_MARK).is_file() and (path == root or root in path.parents):
            return str(Path("artifacts") / path.relative_to(root))
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


DEVICE_ENV = "COURSE_DEVICE"  # "cpu", "cuda", "cuda:1", "mps" or "auto"; forces the device everywhere
_announced: set[str] = set()


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the device: `prefer`, else $COURSE_DEVICE, else CUDA, then Apple MPS, then CPU."""
    choice = (prefer or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if choice == "auto":
        return torch.device(next(kind for kind, present in available.items() if present))
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise ValueError(
            f"unknown device {choice!r} (from {'the argument' if prefer else DEVICE_ENV}); "
            f"use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if not available.get(device.type, False):
        raise ValueError(
            f"device {choice!r} was asked for, but this machine has no {device.type.upper()} device; use cpu or auto"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {choice!r} was asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def course_device(prefer: str | None = None) -> torch.device:
    """Choose the course's device once (see get_device) and print it the first time it is chosen."""
    device = get_device(prefer)
    if str(device) not in _announced:
        _announced.add(str(device))
        print(f"device: {device} (set {DEVICE_ENV}=cpu|cuda|mps to choose)")
    return device


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch, and return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_shape(tensor: torch.Tensor, expected: tuple, name: str = "tensor") -> torch.Tensor:
    """Assert a tensor's shape; None in `expected` matches any size. Returns the tensor for chaining."""
    shape = tuple(tensor.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))
    if not ok:
        raise ValueError(f"{name} has shape {shape}, expected {tuple(expected)}")
    return tensor


def _process_alive(pid: int) -> bool:
    """True if a process with this id is running (POSIX); elsewhere assume it is."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Delete the temporary files that killed writers of `path` left beside it; return what was removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write bytes to a temporary file beside `path`, then rename it into place (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write UTF-8 text atomically (see atomic_write_bytes)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
