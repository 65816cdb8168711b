"""Sphinx configuration of the course website (copied into build/site-src/ by website/build_site.py)."""

project = "Transformers from scratch, in PyTorch"
html_title = "Transformers from scratch"
author = "the course's contributors"
copyright = "the course's contributors; code MIT, text CC BY 4.0"

extensions = ["myst_nb", "sphinx_copybutton"]
copybutton_selector = "div.cell_input div.highlight pre"  # a copy button on code, none on outputs
nb_execution_mode = "off"  # pages show the outputs of the course's own run, never a re-execution
nb_merge_streams = True  # one block per cell for what a cell printed
nb_ipywidgets_js = {}  # no widget scripts from a CDN
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_update_mathjax = False  # its settings are for MathJax 3; the local MathJax 2 is configured below
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]

html_theme = "furo"
html_static_path = ["_static"]
html_show_sourcelink = False
html_favicon = "_static/favicon.svg"
html_css_files = ["course.css"]
html_copy_source = False
# MathJax from the jupyter-server-mathjax package, copied into _static/: math renders with no network.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "processClass": "math|output_area",
    },
    # The package ships the STIX-Web fonts only (as Jupyter uses them): name them, or MathJax looks for TeX fonts.
    # Its font-loading probe points a blank font at about:blank, which Chromium reports as an error: use a local name.
    "HTML-CSS": {
        "availableFonts": [],
        "preferredFont": None,
        "webFont": "STIX-Web",
        "imageFont": None,
        "styles": {"@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}},
    },
    "menuSettings": {"zoom": "None"},
}
exclude_patterns = []
