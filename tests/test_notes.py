"""Figures quoted in notes/, the README and the notebooks' text must match the run they come from; notes' images exist.

Two ways of quoting a figure are checked, in every file of notes/, in the README and in the markdown cells of the
committed notebooks.

1. The backtick form, `` `key` = value ``: the value must equal ``artifacts/metrics.json[key]["value"]`` to a
   relative tolerance of 1e-3.
2. The plain form, for prose meant to be read (the blog post): a number followed at once by an invisible HTML comment
   naming where it comes from, ``1.54<!-- char_gpt.val_loss -->``.
   The source is a key of artifacts/metrics.json, ``path.json:key.subkey``, a value of a JSON record kept in the
   repository (such as scripts/flops.py's), or ``path.csv:column``, the value of that column in the last row of a
   CSV log kept in the repository (for a run that is not the current full run).
   Rule: the number as written must round to the source, i.e. ``|quoted - actual| <= half a unit in the last written
   digit``, so ``1.54`` accepts 1.535 to 1.545 and ``1,068`` accepts 1067.5 to 1068.5.
   Thousands separators are ignored; a ``%`` sign quotes a fraction as a percentage (``77%`` for 0.7679 is
   0.77 ± 0.005); a ``×`` or ``x`` sign marks a ratio and changes nothing; `` million`` multiplies the number and its
   tolerance by 10**6 (``1.8 million`` accepts 1.75e6 to 1.85e6), and `` billion`` by 10**9.
   Every comment that names a source must follow a number directly, so a figure cannot lose its number unnoticed.
"""

import csv
import json
import math
import re

import pytest

from helpers.course.utils import PROJECT_ROOT

QUOTE = re.compile(r"`([a-z_0-9]+\.[A-Za-z0-9_.]+)`\s+=\s+([0-9][0-9,]*(?:\.[0-9]+)?(?:e-?[0-9]+)?)")
# path.json:key.subkey, a metrics.json key, or path.csv:column
SOURCE = r"[\w./-]+\.json:[\w.]+|[a-z_0-9]+\.[A-Za-z0-9_.]+|[\w./-]+\.csv:\w+"
PLAIN = re.compile(rf"(?<![\w.,])([0-9][0-9,]*(?:\.[0-9]+)?)(%|×|x| million| billion)?<!-- ({SOURCE}) -->")
ANY_SOURCE_COMMENT = re.compile(rf"<!--\s*({SOURCE})\s*-->")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)|<img\b[^>]*\bsrc=[\"']([^\"']+)")
SCALE = {"%": 0.01, "×": 1.0, "x": 1.0, " million": 1e6, " billion": 1e9, "": 1.0}

NOTES = sorted((PROJECT_ROOT / "notes").glob("*.md"))
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DOCS = NOTES + [PROJECT_ROOT / "README.md"] + NOTEBOOKS
BLOG = PROJECT_ROOT / "notes" / "blog-post.md"
README = PROJECT_ROOT / "README.md"


def read(doc) -> str:
    """A note's text, or the markdown cells of a notebook (its code and outputs are nbval's to check)."""
    if doc.suffix != ".ipynb":
        return doc.read_text()
    cells = json.loads(doc.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def metrics():
    return json.loads((PROJECT_ROOT / "artifacts" / "metrics.json").read_text())


def source_value(source: str, known: dict) -> float:
    """The value a plain-form figure names: a metrics.json key, a (dotted) key of a JSON record kept in the
    repository, or the last row of a column of a CSV log."""
    if ".json:" in source:
        path, keys = source.rsplit(":", 1)
        value = json.loads((PROJECT_ROOT / path).read_text())
        for key in keys.split("."):
            assert isinstance(value, dict) and key in value, f"{path} has no {keys!r}"
            value = value[key]
        return float(value)
    if ".csv:" in source:
        path, column = source.rsplit(":", 1)
        with open(PROJECT_ROOT / path, newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and column in rows[-1], f"{path} has no column {column!r} (or no rows)"
        return float(rows[-1][column])
    assert source in known, f"{source} is not in artifacts/metrics.json"
    return known[source]["value"]


def rounds_to(text: str, sign: str, actual: float) -> bool:
    """True when the number `text` (with its sign: %, ×, x, ' million' or '') is `actual` to the precision written."""
    digits = text.replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    scale = SCALE[sign]
    quoted, half_unit = float(digits) * scale, 0.5 * 10.0**-decimals * scale
    return abs(quoted - actual) <= half_unit * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize(
    ("text", "sign", "actual", "expected"),
    [
        ("1.54", "", 1.5357, True),
        ("1.53", "", 1.5357, False),
        ("1.536", "", 1.5357, True),
        ("1,068", "×", 1067.748, True),
        ("1,067", "×", 1067.748, False),
        ("77", "%", 0.7679, True),
        ("76", "%", 0.7679, False),
        ("33.9", "", 33.915, True),
        ("1.8", " million", 1816896.0, True),
        ("1.9", " million", 1816896.0, False),
        ("24.31", " billion", 24312545280.0, True),
        ("24.3", " billion", 24412545280.0, False),
        ("0", "", 0.0, True),
    ],
)
def test_the_rounding_rule(text, sign, actual, expected):
    assert rounds_to(text, sign, actual) is expected


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_metrics_match_the_full_run(doc):
    known = metrics()
    for name, text in QUOTE.findall(read(doc)):
        assert name in known, f"{doc.name} quotes {name}, which artifacts/metrics.json does not have"
        quoted, actual = float(text.replace(",", "")), known[name]["value"]
        assert math.isclose(quoted, actual, rel_tol=1e-3, abs_tol=1e-9), f"{doc.name}: {name} = {quoted}, run: {actual}"


def stale_figures(text: str, known: dict) -> list[str]:
    """The plain-form figures of a text that do not round to their source."""
    wrong = []
    for number, sign, source in PLAIN.findall(text):
        actual = source_value(source, known)
        if not rounds_to(number, sign, actual):
            wrong.append(f"{number}{sign} for {source} (actual {actual:.6g})")
    return wrong


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_plain_figures_match_their_source(doc):
    wrong = stale_figures(read(doc), metrics())
    assert not wrong, f"{doc.name}: figures that do not round to their source: {wrong}"


def test_a_stale_number_in_a_notebooks_text_is_caught(tmp_path):
    known = {"char_gpt.val_loss": {"value": 1.5357}}
    nb = {"cells": [{"cell_type": "markdown", "source": ["The loss fell to 1.54<!-- char_gpt.val_loss --> nats."]},
                    {"cell_type": "code", "source": ["print(1.60)"]}]}  # fmt: skip
    path = tmp_path / "06_x.ipynb"
    path.write_text(json.dumps(nb))
    assert stale_figures(read(path), known) == []
    nb["cells"][0]["source"] = ["The loss fell to 1.60<!-- char_gpt.val_loss --> nats."]  # a run changed it
    path.write_text(json.dumps(nb))
    assert stale_figures(read(path), known) == ["1.60 for char_gpt.val_loss (actual 1.5357)"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_source_comment_follows_a_number(doc):
    text = read(doc)
    quoted_ends = {m.end() for m in PLAIN.finditer(text)}
    orphans = [m.group(0) for m in ANY_SOURCE_COMMENT.finditer(text) if m.end() not in quoted_ends]
    assert not orphans, f"{doc.name}: source comments with no number directly before them: {orphans}"


def test_every_metric_in_metrics_json_is_from_a_full_run():
    assert all(m["mode"] == "full" for m in metrics().values())


def test_notes_quote_something():
    assert sum(len(QUOTE.findall(read(d))) + len(PLAIN.findall(read(d))) for d in DOCS) > 20


def test_blog_post_quotes_its_figures_in_plain_form():
    text = BLOG.read_text()
    plain = PLAIN.findall(text)
    metric_keys = {source for _, _, source in plain if ".csv:" not in source}
    assert len(metric_keys) >= 12, f"the blog post quotes only {len(metric_keys)} metrics in the plain form"
    assert not QUOTE.findall(text), "the blog post should quote plain numbers, not `key` = value"
    assert 1000 <= len(text.split()) <= 2000, f"the blog post has {len(text.split())} words (wc -w)"


@pytest.mark.parametrize("doc", NOTES, ids=lambda p: p.name)
def test_image_links_in_notes_exist(doc):
    links = [a or b for a, b in IMAGE.findall(doc.read_text())]
    missing = [link for link in links if "://" in link or not (doc.parent / link.split("#")[0]).is_file()]
    assert not missing, f"{doc.name}: image links that are not files of the repository: {missing}"


def test_blog_post_shows_three_to_five_figures():
    links = [a or b for a, b in IMAGE.findall(BLOG.read_text())]
    assert 3 <= len(links) <= 5, links


def _tokens(line: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", line.split("#")[0])


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    rest = iter(big)
    return all(token in rest for token in small)


def test_blog_code_is_trimmed_from_helpers_attention():
    """Each line of the blog's Python blocks is a line of helpers/attention.py with parts left out.

    A line passes when its tokens (comment removed) occur in order within one line of the helper; `def` and `return`
    lines, whose signatures and results the trimming changes, need only name things the helper has.
    """
    source = (PROJECT_ROOT / "helpers" / "attention.py").read_text()
    source_lines = [_tokens(line) for line in source.splitlines()]
    names = set(re.findall(r"\w+", source))
    blocks = re.findall(r"```python\n(.*?)```", BLOG.read_text(), re.S)
    assert len(blocks) >= 2, "the blog post should show scaled dot-product and multi-head attention"
    stale = []
    for line in "".join(blocks).splitlines():
        tokens = _tokens(line)
        if not tokens:
            continue
        if tokens[0] in ("def", "return"):
            ok = set(t for t in tokens if re.fullmatch(r"\w+", t)) <= names
        else:
            ok = any(_is_subsequence(tokens, big) for big in source_lines)
        if not ok:
            stale.append(line.strip())
    assert not stale, f"lines of the blog's code not found in helpers/attention.py: {stale}"


def _rounded_time(seconds: float) -> str:
    """How the README's notebook table writes a run time: seconds under 100 s, else minutes with one decimal."""
    return f"{seconds:.0f} s" if seconds < 99.5 else f"{seconds / 60:.1f} min"


def test_the_notebook_table_times_are_the_recorded_run_times():
    known = metrics()
    rows = re.findall(r"^\| (\d\d) \| \[.*\| ([0-9.]+ (?:s|min)) \|$", README.read_text(), flags=re.M)
    assert len(rows) == len(list((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    wrong = [(nb, shown) for nb, shown in rows if shown != _rounded_time(known[f"run_all.seconds_{nb}"]["value"])]
    assert not wrong, f"README notebook table times that differ from run_all.seconds_NN: {wrong}"


def test_the_readme_counts_the_exercises_there_are():
    from grader.core import load_checks

    counts = re.findall(r"\((\d+) exercises in all\)", README.read_text())
    assert counts == [str(len(load_checks()))]
