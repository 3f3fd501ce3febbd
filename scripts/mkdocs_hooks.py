"""MkDocs hook (mkdocs.yml `hooks:`): docstrings cross-reference in Sphinx style (:class:`Model`); the API
reference shows the name alone, as code."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub("", html)
