"""Build small fake notebooks for the tests of run_all.py."""

import sys

import nbformat

from helpers.course.utils import PROJECT_ROOT


def make_notebook(path, *sources, parameters="mode = 'full'  # run mode"):
    """Write a notebook: a title, a `parameters` cell, then one code cell per source."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# Title of {path.stem}"))
    nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(s) for s in sources)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def run_all_command(course, *args):
    """The command line that runs the project's run_all.py on a fake course's notebooks, building into its build/."""
    return [
        sys.executable,
        str(PROJECT_ROOT / "run_all.py"),
        "--notebooks-dir",
        str(course / "notebooks"),
        "--build-dir",
        str(course / "build"),
        *args,
    ]
