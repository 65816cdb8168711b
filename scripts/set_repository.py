"""Set the course's public address in every place that names it (maintainers, when the course is published).

    python scripts/set_repository.py https://github.com/OWNER/NAME
    python scripts/set_repository.py ""          # unpublished: the site leaves the links out

The one setting is pyproject.toml's [tool.course] repository. This writes it there, into CITATION.cff's
repository-code, and into the first code cell of every notebook (the cell that, outside the course's folder, clones
the course and installs it), so that the site's Colab links work; tests/test_website.py checks that they agree.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP_TAG = "course-setup"
_NOTEBOOK_LINE = re.compile(r'^COURSE_REPOSITORY = "[^"\n]*"', re.M)


def notebook_repository(nb: dict) -> str | None:
    """The address in a notebook's course-setup cell (None when it has no such cell)."""
    for cell in nb["cells"]:
        if SETUP_TAG in cell["metadata"].get("tags", []):
            m = _NOTEBOOK_LINE.search("".join(cell["source"]))
            return m[0].split('"')[1] if m else None
    return None


def set_repository(url: str) -> list[str]:
    """Write url everywhere; return the files changed."""
    if url and not re.fullmatch(r"https://\S+", url):
        raise ValueError(f"expected an https:// address, got {url!r}")
    changed = []
    pyproject = ROOT / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    new = re.sub(r'(?m)^(\[tool\.course\][^\[]*?^repository = )"[^"\n]*"', rf'\1"{url}"', text, count=1)
    if new == text and f'repository = "{url}"' not in text:
        raise ValueError("pyproject.toml has no [tool.course] repository line")
    changed += _write(pyproject, text, new)
    citation = ROOT / "CITATION.cff"
    text = citation.read_text(encoding="utf-8")
    new = re.sub(r"(?m)^repository-code: .*\n", "", text)
    if url:
        new = new.replace("\nlicense:", f'\nrepository-code: "{url}"\nlicense:', 1)
    changed += _write(citation, text, new)
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        for cell in nb["cells"]:
            if SETUP_TAG in cell["metadata"].get("tags", []):
                source = _NOTEBOOK_LINE.sub(f'COURSE_REPOSITORY = "{url}"', "".join(cell["source"]))
                cell["source"] = source.splitlines(keepends=True)
        changed += _write(path, text, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


def _write(path: Path, old: str, new: str) -> list[str]:
    if new == old:
        return []
    path.write_text(new, encoding="utf-8")
    return [str(path.relative_to(ROOT))]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        changed = set_repository(argv[0])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(changed)} file(s) changed: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
