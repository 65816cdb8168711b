"""Check the built website in headless Chromium: every page loads without a console error, every internal link
resolves, math is typeset, search finds pages; save screenshots of the index and two notebooks.

    python website/check_site.py          # checks build/site/ (build it first: make site)

Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

ROOT = Path(__file__).resolve().parent.parent
SITE_DIR = ROOT / "build" / "site"
SHOTS_DIR = ROOT / "build" / "site-screenshots"
SCREENSHOTS = {
    "index": "index.html",
    "02_notebook": "notebooks/02_scaled_dot_product_attention.html",
    "06_notebook": "notebooks/06_char_gpt.html",
}
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
MATH_DONE = """
const spans = document.querySelectorAll('span.math.notranslate, div.math.notranslate').length;
const typeset = document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_CHTML').length;
const pending = document.querySelectorAll('.MathJax_Processing, .MathJax_Preview:not(:empty)').length;
return [spans, typeset, pending, !!window.MathJax];
"""


class Links(HTMLParser):
    """Collect the hrefs and srcs of a page and the ids it defines."""

    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key) and not (tag == "link" and a.get("rel") in ("preconnect", "dns-prefetch")):
                self.refs.append(a[key])


def _parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def check_links(site: Path) -> tuple[list[str], list[str]]:
    """Every internal href/src points to a file of the site (and to an id on it, when it names one).

    Returns (problems, external references); external ones are only listed: the site must not need them.
    """
    problems, external, parsed = [], [], {}
    pages = sorted(site.rglob("*.html"))
    for page in pages:
        links = parsed.setdefault(page, _parse(page))
        for ref in links.refs:
            url = urlparse(ref)
            if url.scheme in ("http", "https") or ref.startswith("//"):
                external.append(f"{page.relative_to(site)} -> {ref}")
                continue
            if url.scheme in ("mailto", "data", "javascript"):
                continue
            path, fragment = urldefrag(ref)
            target = page if not path else (page.parent / unquote(urlparse(path).path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(site)}: broken link {ref}")
            elif fragment and target.suffix == ".html":
                ids = parsed.setdefault(target, _parse(target)).ids
                if fragment not in ids:
                    problems.append(f"{page.relative_to(site)}: {ref} names no id on its page")
    return problems, external


# A literal $ beside a math span: a $$...$$ that MyST did not take as math, left as "$" + inline math + "$".
_STRAY_DOLLAR = re.compile(
    r"\$\s*(?=<(?:span|div) class=\"math)|<(?:span|div) class=\"math[^>]*>[^<]*</(?:span|div)>\s*\$"
)


def check_dollars(site: Path) -> list[str]:
    """Pages where a literal $ stands next to a math span (a formula MyST did not parse as display math)."""
    problems = []
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8", errors="replace")
        for m in _STRAY_DOLLAR.finditer(html):
            where = html[m.start() : m.start() + 80]
            problems.append(f"{page.relative_to(site)}: a literal $ beside a formula: {where!r}")
    return problems


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request
        pass


def _driver(user_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((b for b in CHROMIUM if Path(b).exists()), None)
    driver_path = next((d for d in DRIVER if Path(d).exists()), shutil.which("chromedriver"))
    if binary is None or driver_path is None:
        raise SystemExit(
            "error: Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        "--window-size=1280,900",
        f"--user-data-dir={user_dir}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=opts)


# The code cells (their input, not their output) that are wider than their column: [width, visible, longest line].
OVERFLOW = """
return Array.from(document.querySelectorAll('div.cell_input pre'))
  .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
  .map(pre => [pre.scrollWidth, pre.clientWidth,
               pre.innerText.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '')]);
"""


def _wait_for_math(driver, timeout: float = 20.0) -> tuple[int, int]:
    """Wait until MathJax has typeset the page; return (formulas, typeset elements)."""
    end = time.monotonic() + timeout
    while True:
        spans, typeset, pending, has_mathjax = driver.execute_script(MATH_DONE)
        if spans == 0 or (has_mathjax and typeset >= spans and pending == 0) or time.monotonic() > end:
            return spans, typeset
        time.sleep(0.2)


def check_pages(driver, base: str, site: Path, pages: list[Path]) -> list[str]:
    """Load each page: no console error, formulas typeset, no raw TeX left in the text."""
    problems = []
    for page in pages:
        rel = page.relative_to(site).as_posix()
        driver.get(base + rel)
        spans, typeset = _wait_for_math(driver)
        if spans and typeset < spans:
            problems.append(f"{rel}: {typeset} of {spans} formulas typeset")
        if spans and driver.execute_script("return document.body.innerText.includes('\\\\(')"):
            problems.append(f"{rel}: raw TeX (\\( ... \\)) left in the page")
        for width, visible, line in driver.execute_script(OVERFLOW):
            problems.append(f"{rel}: a code cell {width} px wide in a {visible} px column at 1280 px: {line[:70]!r}")
        for entry in driver.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"{rel}: console error: {entry['message'][:200]}")
    return problems


def formula_screenshots(driver, base: str, site: Path) -> list[str]:
    """Screenshot the first display formula of notebooks 01-05 (NN_formula.png); a page without one is a problem."""
    problems = []
    for page in sorted((site / "notebooks").glob("0[1-5]_*.html")):
        driver.get(base + page.relative_to(site).as_posix())
        _wait_for_math(driver)
        found = driver.execute_script(
            "const m = document.querySelector('div.math');"
            "if (!m) return false;"
            "const top = m.getBoundingClientRect().top + window.scrollY - 250;"
            "window.scrollTo({top: top, behavior: 'instant'}); return true;"
        )
        if not found:
            problems.append(f"{page.relative_to(site)}: no display formula")
            continue
        driver.save_screenshot(str(SHOTS_DIR / f"{page.name[:2]}_formula.png"))
    return problems


def check_search(driver, base: str) -> list[str]:
    """The search page finds the multi-head attention notebook."""
    driver.get(base + "search.html?q=multi-head")
    end = time.monotonic() + 20
    while time.monotonic() < end:
        hits = driver.execute_script("return document.querySelectorAll('#search-results li').length")
        if hits:
            found = driver.execute_script("return document.querySelector('#search-results').innerText")
            return [] if "Multi-head" in found or "multi-head" in found else ["search: no multi-head page found"]
        time.sleep(0.3)
    return ["search: no result for 'multi-head'"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", type=Path, default=SITE_DIR)
    args = parser.parse_args(argv)
    site = args.site.resolve()
    if not (site / "index.html").exists():
        print(f"error: no site in {site}: run `make site` first", file=sys.stderr)
        return 1
    start = time.perf_counter()
    problems, external = check_links(site)
    problems += check_dollars(site)
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    server, base = _serve(site)
    with tempfile.TemporaryDirectory() as user_dir:
        driver = _driver(user_dir)
        try:
            SHOTS_DIR.mkdir(parents=True, exist_ok=True)
            for name, rel in SCREENSHOTS.items():
                driver.get(base + rel)
                _wait_for_math(driver)
                driver.save_screenshot(str(SHOTS_DIR / f"{name}.png"))
            problems += formula_screenshots(driver, base, site)
            problems += check_pages(driver, base, site, pages)
            problems += check_search(driver, base)
            # Opened from disk: the same checks on the index and a notebook page.
            problems += [
                f"file://: {p}"
                for p in check_pages(
                    driver, site.as_uri() + "/", site, [site / "index.html", site / SCREENSHOTS["02_notebook"]]
                )
            ]
        finally:
            driver.quit()
            server.shutdown()
    targets = sorted({line.split(" -> ")[1] for line in external})
    if targets:
        print(f"links to other sites (not needed to read the pages): {', '.join(targets)}")
    print(
        f"checked {len(pages)} pages (served and from disk) in {time.perf_counter() - start:.0f} s; "
        f"screenshots in {SHOTS_DIR.relative_to(ROOT)}/"
    )
    for p in problems:
        print(f"problem: {p}")
    print("site check: " + ("passed" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
