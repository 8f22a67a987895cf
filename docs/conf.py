"""Sphinx configuration of the milady-lab documentation (``make docs``; strict in ``make test``).

Pages are Markdown (MyST). The REST reference is rendered from
``jupyter_server_ext/openapi.json`` by sphinxcontrib-openapi at build time, offline.
"""

from __future__ import annotations

project = "milady-lab"
author = "milady-lab contributors"
copyright = "milady-lab contributors"

extensions = ["myst_parser", "sphinxcontrib.openapi"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "img"]
# Headings get anchors, so `page.md#heading` links are checked like page links.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = "milady-lab"
html_static_path: list[str] = []
# No page has math, so MathJax (a CDN script) is never loaded; furo bundles its assets.
