"""The website builder: what it takes from a run, what it removes from the pages, and the link check."""

import os
import sys

import nbformat
import pytest

from helpers.course.utils import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "website"))
import build_site as site_build  # noqa: E402 - website/ is a folder of scripts, not a package
import check_site  # noqa: E402


def _notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 02 · Title"),
        nbformat.v4.new_code_cell("mode = 'full'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("mode = 'quick'", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)"),
        nbformat.v4.new_code_cell("train()"),
        nbformat.v4.new_markdown_cell("## Exercises: write it yourself\n\n- `02.sdpa`"),
    ]
    nb.cells[4].outputs = [nbformat.v4.new_output("stream", name="stderr", text="step 1\rstep 2\rstep 3\ndone\n")]
    return nb


def test_clean_notebook_removes_scaffolding_and_progress_states():
    nb = site_build.clean_notebook(_notebook(), "../exercises/02_x.ipynb")
    sources = [c.source for c in nb.cells]
    assert "mode = 'quick'" not in sources, "papermill's injected parameters are hidden"
    assert "mode = 'full'" in sources, "the parameters cell stays"
    assert "print(1)" in sources and not any("NBVAL" in s for s in sources)
    assert nb.cells[3].outputs[0]["text"] == "step 3\ndone\n"
    assert nb.cells[-1].source.endswith("(../exercises/02_x.ipynb)")


def test_choose_notebooks_prefers_a_newer_good_run(tmp_path, monkeypatch):
    monkeypatch.setattr(site_build, "EXECUTED_DIR", tmp_path)
    committed = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    good, failed = tmp_path / committed[0].name, tmp_path / committed[1].name
    nbformat.write(_notebook(), good)
    bad = _notebook()
    bad.metadata["papermill"] = {"exception": True}
    nbformat.write(bad, failed)
    future = committed[0].stat().st_mtime + 60
    os.utime(good, (future, future))
    os.utime(failed, (future, future))
    chosen = site_build.choose_notebooks()
    assert chosen[committed[0].stem] == good
    assert chosen[committed[1].stem] == committed[1], "a failed run's copy is never shown"
    with pytest.raises(site_build.SiteError, match="missing"):
        site_build.choose_notebooks(tmp_path)


def test_link_check_finds_broken_links_and_missing_anchors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="a/page.html#here">ok</a><a href="a/page.html#nowhere">bad id</a><a href="gone.html">bad</a>'
        '<img src="a/pic.png"><a href="https://example.org">out</a>'
    )
    (tmp_path / "a" / "page.html").write_text('<h1 id="here">x</h1><a href="../index.html">back</a>')
    (tmp_path / "a" / "pic.png").write_bytes(b"")
    problems, external = check_site.check_links(tmp_path)
    assert problems == [
        "index.html: a/page.html#nowhere names no id on its page",
        "index.html: broken link gone.html",
    ]
    assert external == ["index.html -> https://example.org"]


def test_results_are_grouped_by_notebook():
    table = "# Results\n\nWritten by run_all.\n\n| metric | value | notebook |\n|---|---|---|\n"
    table += "| `b.x` | 2 | 02_b |\n| `a.y` | 1 | 01_a |\n| `b.z` | 3 | 02_b |\n"
    page = site_build.results_by_notebook(table)
    assert page.index("## 01_a") < page.index("## 02_b")
    assert "| `b.x` | 2 |\n| `b.z` | 3 |" in page
    assert page.startswith("# Results\nWritten by run_all.")


def display_math_inside_paragraphs(text: str) -> list[str]:
    """Display formulas ($$ ... $$, on one or more lines) that do not stand in a paragraph of their own.

    JupyterLab renders them, but MyST (the site) reads a $$ inside a paragraph as inline math between two stray $.
    """
    lines, bad, i = text.split("\n"), [], 0
    while i < len(lines):
        if lines[i].strip().startswith("$$"):
            end = i
            while end < len(lines) and not (
                lines[end].strip().endswith("$$") and (end > i or len(lines[i].strip()) > 2)
            ):
                end += 1
            before = lines[i - 1].strip() if i > 0 else ""
            after = lines[end + 1].strip() if end + 1 < len(lines) else ""
            if before or after:
                bad.append(lines[i].strip()[:60])
            i = end + 1
        else:
            i += 1
    return bad


def test_every_display_formula_is_a_paragraph_of_its_own():
    found = {}
    for path in sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown" and display_math_inside_paragraphs(cell.source):
                found.setdefault(path.name, []).extend(display_math_inside_paragraphs(cell.source))
    for path in sorted((PROJECT_ROOT / "solutions").glob("[0-9][0-9]_*.py")):
        markdown = "\n".join(line[2:] if line.startswith("# ") else "" for line in path.read_text().splitlines())
        if display_math_inside_paragraphs(markdown):
            found[path.name] = display_math_inside_paragraphs(markdown)
    assert not found, f"display math inside a paragraph (MyST shows stray $): {found}"


def test_a_planted_formula_inside_a_paragraph_is_found():
    assert display_math_inside_paragraphs("Text:\n$$x = 1$$\nmore text") == ["$$x = 1$$"]
    assert display_math_inside_paragraphs("Text:\n$$a\nb$$\nmore") == ["$$a"]
    assert display_math_inside_paragraphs("Text:\n\n$$x = 1$$\n\nmore text") == []


def _one_page_build(tmp_path, monkeypatch, nb) -> None:
    """Build a site of one notebook page (with the exercises and notes) into tmp_path."""
    path = tmp_path / "01_planted.ipynb"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    monkeypatch.setattr(site_build, "choose_notebooks", lambda notebooks_dir=None: {"01_planted": path})
    monkeypatch.setattr(site_build, "SOURCE_DIR", tmp_path / "src")
    site_build.build(out=tmp_path / "site")


def test_a_notebook_with_an_error_output_fails_the_site_build(tmp_path, monkeypatch):
    nb = _notebook()
    nb.cells[4].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="planted", traceback=["..."])]
    with pytest.raises(site_build.SiteError, match="holds an error output .cell 4: ValueError: planted"):
        _one_page_build(tmp_path, monkeypatch, nb)


def test_a_sphinx_warning_fails_the_site_build(tmp_path, monkeypatch):
    nb = _notebook()
    nb.cells[0].source += "\n\nSee [the missing page](no-such-page.md)."
    with pytest.raises(site_build.SiteError, match="(?s)warnings count as errors.*no-such-page"):
        _one_page_build(tmp_path, monkeypatch, nb)
    nb.cells[0].source = "# 01 · Title"  # the same page without the broken link builds
    _one_page_build(tmp_path, monkeypatch, nb)
    assert (tmp_path / "site" / "notebooks" / "01_planted.html").is_file()


def test_the_site_check_finds_a_literal_dollar_beside_a_formula(tmp_path):
    good = '<p>weights <span class="math notranslate nohighlight">\\(w\\)</span> cost $5</p>'
    stray = '<p>$ <span class="math notranslate nohighlight">\\(\\mathrm{softmax}(x)\\)</span> $</p>'
    display = '<div class="math notranslate nohighlight">\\[x\\]</div>$'
    for name, html in [("good", good), ("stray", stray), ("display", display)]:
        (tmp_path / f"{name}.html").write_text(html)
    problems = check_site.check_dollars(tmp_path)
    assert [p.split(":")[0] for p in problems] == ["display.html", "stray.html", "stray.html"], problems
    assert "a literal $ beside a formula" in problems[0]


def test_one_repository_setting_drives_the_colab_links_the_repository_link_and_the_citation():
    repo = site_build.repository()
    citation = (PROJECT_ROOT / "CITATION.cff").read_text()
    if repo:
        assert f'repository-code: "{repo}"' in citation, "CITATION.cff names the repository of pyproject.toml"
    else:
        assert "repository-code" not in citation and "http" not in site_build._index({}, {}, [], False)
    url = "https://github.com/someone/transformers-course"
    assert site_build.colab_url(url, "notebooks/02_x.ipynb") == (
        "https://colab.research.google.com/github/someone/transformers-course/blob/main/notebooks/02_x.ipynb"
    )
    assert site_build.colab_url("https://gitlab.com/someone/course", "notebooks/02_x.ipynb") is None
    with_repo = site_build.links_cell("02_x", site_build.colab_url(url, "notebooks/02_x.ipynb"))
    without = site_build.links_cell("02_x", site_build.colab_url("", "notebooks/02_x.ipynb"))
    assert "Open in Colab](https://colab.research.google.com/github/someone/" in with_repo.source
    assert "Colab" not in without.source and "{download}`Download this notebook <02_x.ipynb>`" in without.source
    index = site_build._index({}, {}, [], False, url)
    assert f"([{url}]({url}))" in index and "## Citing the course" in index


def _set_repository_module():
    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    import set_repository

    return set_repository


def test_every_notebook_starts_with_the_same_course_setup_cell_and_the_repository_of_pyproject():
    setter = _set_repository_module()
    cells = set()
    for path in sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert "course-setup" in nb.cells[1].metadata.get("tags", []), f"{path.name}: no course-setup cell"
        assert setter.notebook_repository(nb) == site_build.repository(), f"{path.name}: run set_repository.py"
        cells.add(nb.cells[1].source)
    assert len(cells) == 1, "the course-setup cells differ between notebooks"


def test_set_repository_writes_the_one_setting_everywhere_and_back(tmp_path, monkeypatch):
    setter = _set_repository_module()
    (tmp_path / "notebooks").mkdir()
    names = ["pyproject.toml", "CITATION.cff", "notebooks/01_attention_by_hand.ipynb"]
    for name in names:
        (tmp_path / name).write_bytes((PROJECT_ROOT / name).read_bytes())
    monkeypatch.setattr(setter, "ROOT", tmp_path)
    url = "https://github.com/someone/transformers-course"
    assert sorted(setter.set_repository(url)) == sorted(names)
    assert f'repository = "{url}"' in (tmp_path / "pyproject.toml").read_text()
    assert f'repository-code: "{url}"' in (tmp_path / "CITATION.cff").read_text()
    nb = nbformat.read(tmp_path / names[2], as_version=4)
    assert setter.notebook_repository(nb) == url
    setter.set_repository("")
    assert all((tmp_path / n).read_bytes() == (PROJECT_ROOT / n).read_bytes() for n in names), "unset: as committed"
    with pytest.raises(ValueError, match="https://"):
        setter.set_repository("github.com/someone/course")
