"""Build the course website from the latest executed notebooks, the exercises and the notes (Sphinx, MyST-NB).

    python website/build_site.py                      # into build/site/ (open build/site/index.html)
    python website/build_site.py --notebooks DIR      # take the executed notebooks from DIR instead

For each notebook the newest good copy is used: build/full/executed/ (a full run that did not fail) when it is newer
than the committed one, else notebooks/. Test scaffolding (nbval markers, papermill's injected parameters) is removed
and progress bars are reduced to their final state. Math is rendered by a local MathJax, so pages work offline,
opened from disk or served with `python -m http.server`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader import workspace  # noqa: E402 - after the path is set, so this works from any folder

HERE = ROOT / "website"
BUILD = ROOT / "build"
SOURCE_DIR = BUILD / "site-src"
SITE_DIR = BUILD / "site"
EXECUTED_DIR = BUILD / "full" / "executed"
_NBVAL = re.compile(r"^\s*# NBVAL_\w+\s*$")
NOTES = [  # (file in notes/, in this order)
    "attention-in-plain-words.md",
    "theory-summary.md",
    "why-attention-scales.md",
    "mistakes-and-fixes.md",
    "interview-questions.md",
    "blog-post.md",
    "weekly-retrospective.md",
]


def repository() -> str:
    """The course's public repository, from pyproject.toml's [tool.course] repository ("" while unpublished).

    This one setting drives the repository link, the "Open in Colab" links and the citation's URL; all are left out
    of the site while it is empty.
    """
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["course"]["repository"]


def colab_url(repo: str, notebook_path: str) -> str | None:
    """The Colab address of a notebook of a GitHub repository (None for a repository elsewhere)."""
    m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", repo)
    return f"https://colab.research.google.com/github/{m[1]}/blob/main/{notebook_path}" if m else None


def links_cell(name: str, colab: str | None = None) -> nbformat.NotebookNode:
    """The line under a page's title: download the notebook, and open it in Colab when there is an address."""
    parts = [f"{{download}}`Download this notebook <{name}.ipynb>`"] + ([f"[Open in Colab]({colab})"] if colab else [])
    return nbformat.v4.new_markdown_cell(" · ".join(parts))


class SiteError(Exception):
    """Something the site cannot be built without, said in one line."""


def choose_notebooks(executed_dir: Path | None = None) -> dict[str, Path]:
    """For each course notebook, the copy the site shows (see the module docstring)."""
    chosen = {}
    for committed in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        chosen[committed.stem] = committed
        if executed_dir is not None:
            candidate = executed_dir / committed.name
            if not candidate.exists():
                raise SiteError(f"{candidate} is missing")
            chosen[committed.stem] = candidate
            continue
        run = EXECUTED_DIR / committed.name
        if run.exists() and run.stat().st_mtime > committed.stat().st_mtime and not _failed(run):
            chosen[committed.stem] = run
    if not chosen:
        raise SiteError("no notebooks found in notebooks/")
    return chosen


def _failed(path: Path) -> bool:
    """True when papermill marked the executed copy as failed or interrupted."""
    try:
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
    except Exception:  # noqa: BLE001 - an unreadable copy is as good as failed
        return True
    return bool(meta.get("exception")) or meta.get("status") == "failed"


def final_progress(text: str) -> str:
    """Reduce carriage-return progress output to the last state of each line."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _shown(path: Path) -> str:
    """A path relative to the project when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def error_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """Where a notebook's outputs hold an error (a traceback): 'cell N: ErrorName: message' for each."""
    return [
        f"cell {i}: {out.get('ename', 'error')}: {str(out.get('evalue', ''))[:120]}"
        for i, cell in enumerate(nb.cells)
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def clean_notebook(nb: nbformat.NotebookNode, exercises_page: str | None = None) -> nbformat.NotebookNode:
    """Remove test scaffolding and progress noise; link the closing Exercises cell to the exercises page."""
    cells = []
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.source = "\n".join(line for line in cell.source.splitlines() if not _NBVAL.match(line)).strip("\n")
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    out["text"] = final_progress(out["text"])
        cells.append(cell)
    if exercises_page and cells and cells[-1].cell_type == "markdown" and "## Exercises" in cells[-1].source:
        cells[-1].source += f"\n\n[Open the exercise notebook of this chapter]({exercises_page})"
    nb.cells = cells
    return nb


def soft_wrapped(nb: dict) -> dict:
    """Tag every code cell of an exercise notebook "soft-wrap": the site wraps its long lines instead of cutting them.

    The exercise notebooks are generated from solutions/ (120 columns) and are meant for JupyterLab; the teaching
    notebooks are formatted to fit the page instead (88 columns, checked by website/check_site.py).
    """
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["metadata"]["tags"] = [*cell["metadata"].get("tags", []), "soft-wrap"]
    return nb


def _title(path: Path) -> str:
    """The first heading of a markdown file or notebook."""
    if path.suffix == ".ipynb":
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                return cell.source.splitlines()[0].lstrip("# ").strip()
        return path.stem
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def _mathjax_dir() -> Path:
    import jupyter_server_mathjax

    path = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (path / "MathJax.js").exists():
        raise SiteError(f"MathJax.js not found in {path}: reinstall jupyter-server-mathjax")
    return path


def _results_page() -> Path:
    """The results table of the latest full run (build/full/artifacts/ when newer than the committed one)."""
    committed, latest = ROOT / "artifacts" / "results.md", BUILD / "full" / "artifacts" / "results.md"
    if latest.exists() and (not committed.exists() or latest.stat().st_mtime > committed.stat().st_mtime):
        return latest
    return committed


def write_sources(notebooks: dict[str, Path], src: Path = SOURCE_DIR) -> None:
    """Write the Sphinx source tree: cleaned notebooks, exercise notebooks, notes, results and the index."""
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    (src / "exercises").mkdir()
    (src / "notes").mkdir()
    repo = repository()
    conf = (HERE / "conf.py").read_text(encoding="utf-8")
    (src / "conf.py").write_text(conf + f"\nrepository = {repo!r}\n" + SITE_REPOSITORY, encoding="utf-8")
    shutil.copytree(_mathjax_dir(), src / "_static" / "mathjax")
    shutil.copy(HERE / "favicon.svg", src / "_static" / "favicon.svg")
    exercises = {s.name: s for s in workspace.sources()}
    for name, path in notebooks.items():
        page = f"../exercises/{name}.ipynb" if name in exercises else None
        nb = nbformat.read(path, as_version=4)
        errors = error_outputs(nb)
        if errors:
            raise SiteError(f"{_shown(path)} holds an error output ({'; '.join(errors[:3])}): run it again")
        nb = clean_notebook(nb, page)
        nb.cells.insert(1, links_cell(name, colab_url(repo, f"notebooks/{name}.ipynb")))
        nbformat.write(nb, src / "notebooks" / f"{name}.ipynb")
    shutil.copy(HERE / "course.css", src / "_static" / "course.css")
    for name, source in exercises.items():
        nb = soft_wrapped(workspace.exercise_notebook(source))
        nb["cells"].insert(1, dict(links_cell(name)))
        (src / "exercises" / f"{name}.ipynb").write_text(workspace.notebook_text(nb), encoding="utf-8")
    notes = [n for n in NOTES if (ROOT / "notes" / n).exists()]
    notes += sorted(p.name for p in (ROOT / "notes").glob("*.md") if p.name not in notes)
    for n in notes:
        shutil.copy(ROOT / "notes" / n, src / "notes" / n)
    shutil.copytree(ROOT / "artifacts" / "figures", src / "artifacts" / "figures")  # the figures the notes show
    results = _results_page()
    if results.exists():
        (src / "results.md").write_text(results_by_notebook(results.read_text(encoding="utf-8")), encoding="utf-8")
    (src / "index.md").write_text(_index(notebooks, exercises, notes, results.exists(), repo), encoding="utf-8")


def results_by_notebook(table: str) -> str:
    """Regroup the results table (one flat table, a notebook column) into one section per notebook."""
    head, groups, columns = [], {}, None
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            if not groups and columns is None:
                head.append(line)
        elif columns is None:
            columns = cells
        elif not set(line) <= set("|-: "):
            row = dict(zip(columns, cells))
            groups.setdefault(row.get("notebook", ""), []).append(row)
    if columns is None or "notebook" not in columns:
        return table
    keep = [c for c in columns if c != "notebook"]
    out = [line for line in head if line.strip()] + [""]
    for notebook in sorted(groups):
        out += [f"## {notebook}", "", "| " + " | ".join(keep) + " |", "|" + "---|" * len(keep)]
        out += ["| " + " | ".join(row[c] for c in keep) + " |" for row in groups[notebook]]
        out.append("")
    return "\n".join(out)


def _toctree(caption: str, entries: list[str]) -> str:
    return "\n".join(["```{toctree}", f":caption: {caption}", ":maxdepth: 1", ":hidden:", "", *entries, "```", ""])


SITE_REPOSITORY = """
if repository:  # the repository link in the page footer
    html_theme_options = {"footer_icons": [{"name": "Repository", "url": repository, "html": "Source code",
                                            "class": ""}]}
"""
HOW_TO_RUN = """## How to run the course

The pages show the notebooks as the course's own run executed them. To run and change them you need Python 3.11 or
newer and a copy of the course's repository{where}; in its folder:

- **On a laptop CPU** (what the course is built for): `make run` sets up `.venv/` with the locked packages and runs
  every notebook headless (about 45 minutes; `make quick`, with small settings, about 6), `make lab` opens
  the notebooks in JupyterLab, and `make test` checks everything. Without `make`, the README lists the same steps
  as plain commands.
- **With a GPU**: the notebooks pick CUDA (or Apple's MPS) by themselves when PyTorch sees one; set
  `COURSE_DEVICE=cpu` to stay on the CPU. On Linux, `make setup` installs PyPI's PyTorch, which includes CUDA.
- **The exercises**: `make exercises` writes one notebook per chapter into `exercises/` (yours, never overwritten),
  `make check` grades them, and `make solution EX=02.sdpa` prints a reference solution. Each page below has a
  download link for its notebook.
"""


def _index(notebooks: dict[str, Path], exercises: dict, notes: list[str], results: bool, repo: str = "") -> str:
    rows = "\n".join(
        f"| {name[:2]} | [{_title(path).split('·', 1)[-1].strip()}](notebooks/{name}.ipynb) | "
        + (f"[exercises](exercises/{name}.ipynb)" if name in exercises else "")
        + " |"
        for name, path in notebooks.items()
    )
    return "\n".join(
        [
            "# Transformers from scratch, in PyTorch",
            "",
            "A course of numbered notebooks that builds a transformer piece by piece, from attention computed by hand",
            "for three tokens to a character-level GPT trained on Tiny Shakespeare and an English→French translator",
            "scored with BLEU.",
            "These pages show the notebooks as the course's own run executed them; open them in JupyterLab to run",
            "and change them, and write each piece yourself in the exercises (`make exercises`, then `make check`).",
            "The notes and the results table of the run are in the menu.",
            "",
            HOW_TO_RUN.format(where=f" ([{repo}]({repo}))" if repo else ""),
            *(
                ["## Citing the course", "", f"The course's `CITATION.cff` gives its citation; its address: {repo}", ""]
                if repo
                else []
            ),
            "## The notebooks",
            "",
            "| # | notebook | exercises |",
            "|---|---|---|",
            rows,
            "",
            _toctree("The course", [f"notebooks/{n}" for n in notebooks]),
            _toctree("Exercises", [f"exercises/{n}" for n in exercises]),
            _toctree("Notes and results", [f"notes/{n[:-3]}" for n in notes] + (["results"] if results else [])),
        ]
    )


def build(notebooks_dir: Path | None = None, out: Path = SITE_DIR, quiet: bool = True) -> Path:
    """Build the site into out and return the path of its index page."""
    start = time.perf_counter()
    chosen = choose_notebooks(notebooks_dir)
    write_sources(chosen, SOURCE_DIR)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # -W --keep-going: every Sphinx warning fails the build, and all of them are listed, not only the first.
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-j", "auto", "-W", "--keep-going", str(SOURCE_DIR), str(tmp)]
    result = subprocess.run(cmd + (["-q"] if quiet else []), capture_output=True, text=True)
    if result.returncode != 0:
        raise SiteError(f"sphinx-build failed (warnings count as errors):\n{result.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the old site stays in place until the new one is complete
    sources = sorted({_shown(p.parent) for p in chosen.values()})
    seconds = time.perf_counter() - start
    print(f"site: {_shown(out)}/index.html ({seconds:.0f} s, notebooks from {', '.join(sources)})")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", type=Path, help="take every executed notebook from this folder")
    parser.add_argument("--out", type=Path, default=SITE_DIR, help="where the site goes (default build/site)")
    args = parser.parse_args(argv)
    try:
        build(args.notebooks, args.out.resolve())
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
