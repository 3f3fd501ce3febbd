"""Relative links of the README and the documentation pages point at files that exist, and their anchors at
headings that exist (as GitHub or MkDocs names them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """Heading ids as GitHub and as MkDocs (Python-Markdown's toc) make them."""
    out = set()
    for line in re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = m[1].strip().replace("`", "")
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text.lower())))  # GitHub
            out.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower()))  # MkDocs
    return out


def links(page: Path) -> list[str]:
    prose = _prose(page.read_text())
    return [m[1] for m in LINK.finditer(prose)] + re.findall(r'<img [^>]*src="([^"]+)"', prose)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            bad.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_readme_links_the_documentation():
    targets = links(ROOT / "README.md")
    for page in ("docs/index.md", "docs/installation.md", "docs/cli/index.md", "docs/python.md",
                 "docs/findings/index.md"):
        assert page in targets, page
