"""The command pages (docs/cli/COMMAND.md) document every option of their command: their option tables are
generated from the parser by scripts/cli_docs.py and must be up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli_docs():
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI_DOCS = _cli_docs()


def test_option_tables_are_up_to_date():
    problems = CLI_DOCS.update(check=True)
    assert not problems, "; ".join(problems) + " -- run: .venv/bin/python scripts/cli_docs.py"


@pytest.mark.parametrize("command", list(CLI_DOCS.pages()))
def test_every_option_is_on_its_page(command):
    page, parser = CLI_DOCS.pages()[command]
    assert page.exists(), f"no page {page.relative_to(ROOT)} for neurotext {command}"
    text = page.read_text()
    missing = [o for o in CLI_DOCS.options(command, parser) if f"<code>{o}" not in text and f", {o}" not in text]
    assert not missing, f"{page.relative_to(ROOT)} lacks {missing}"


def test_every_command_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page, _ in CLI_DOCS.pages().values():
        assert str(page.relative_to(ROOT / "docs")) in nav, f"{page.relative_to(ROOT)} is not in mkdocs.yml's nav"
