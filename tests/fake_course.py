"""Build small fake notebooks for the tests of run_all.py."""

import nbformat


def make_notebook(path, *sources, parameters="mode = 'full'  # run mode"):
    """Write a notebook: a title, a `parameters` cell, then one code cell per source."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# Title of {path.stem}"))
    nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(s) for s in sources)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
