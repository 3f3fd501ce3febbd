"""Write the option tables of the CLI pages (docs/cli/COMMAND.md) from the argparse parser itself.

Each page holds one generated block between the markers

    <!-- cli-options: COMMAND -->
    ...
    <!-- /cli-options -->

with the command's usage line and one table per argument group, every option with its help text (which
states the default). The parser is the only source: run this script after changing an option, and
``tests/docs/test_cli_pages.py`` fails until the pages match.

    .venv/bin/python scripts/cli_docs.py          # rewrite the blocks in place
    .venv/bin/python scripts/cli_docs.py --check  # exit 1 if a page is out of date or missing
"""

from __future__ import annotations

import argparse
import functools
import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "docs" / "cli"
BLOCK = re.compile(r"<!-- cli-options: (?P<command>[\w-]+(?: [\w-]+)*) -->\n.*?<!-- /cli-options -->", re.S)


def subcommands(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """The CLI's subcommands, name -> parser, in the order of ``neurotext --help``."""
    if parser is None:
        from neurotext.cli import build_parser

        parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subs[0].choices) if subs else {}


def _cell(text: str) -> str:
    """Text for a Markdown table cell that renders the same on GitHub and in MkDocs (``[a][b]`` would be a
    reference link)."""
    return (html.escape(" ".join(text.split()), quote=False).replace("|", "&#124;").replace("*", "&#42;")
            .replace("[", "&#91;"))


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}") if action.choices
                                 else action.dest.upper())
    return f"{names} {metavar}"


def options(command: str, parser: argparse.ArgumentParser) -> list[str]:
    """Every option string and positional name of a subcommand (what its page must show)."""
    names = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names += action.option_strings or [action.metavar or action.dest]
    return names


def render(command: str, parser: argparse.ArgumentParser) -> str:
    """The generated block (markers included) for one subcommand."""
    # a fixed width, so the page does not depend on the terminal that regenerated it
    parser.formatter_class = functools.partial(argparse.HelpFormatter, width=88)
    parser.color = False  # Python 3.14+ colours help for terminals
    usage = parser.format_usage().strip()
    lines = [f"<!-- cli-options: {command} -->",
             "<!-- generated from the parser by scripts/cli_docs.py; edit the help strings in cli.py -->",
             "", "```text", usage, "```"]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += ["", f"**{group.title}**", "", "| option | description |", "|---|---|"]
        for a in actions:
            flag = f"<code>{_cell(_invocation(a))}</code>"
            extra = " (required)" if a.required and a.option_strings else ""
            text = a.help or ""
            if isinstance(a, argparse._SubParsersAction):
                text = "the command: " + ", ".join(a.choices)
            lines.append(f"| {flag} | {_cell(text + extra)} |")
    lines.append("<!-- /cli-options -->")
    return "\n".join(lines)


def pages() -> dict[str, tuple[Path, argparse.ArgumentParser]]:
    """command -> (its page, its parser); ``neurotext`` itself (the top-level options) is on the overview, and a
    command's own subcommands (``dictionary train``) on the command's page, one block each."""
    from neurotext.cli import build_parser

    top = build_parser()
    out = {"neurotext": (PAGES / "index.md", top)}
    for command, p in subcommands(top).items():
        out[command] = (PAGES / f"{command}.md", p)
        out.update({f"{command} {name}": (PAGES / f"{command}.md", q) for name, q in subcommands(p).items()})
    return out


def update(check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, compare) every page's block; returns the problems found."""
    problems = []
    for command, (page, parser) in pages().items():
        if not page.exists():
            problems.append(f"{page.relative_to(ROOT)} is missing (a page for `neurotext {command}`)")
            continue
        text = page.read_text()
        blocks = [m for m in BLOCK.finditer(text) if m["command"] == command]
        if len(blocks) != 1:
            problems.append(f"{page.relative_to(ROOT)}: needs exactly one <!-- cli-options: {command} --> block")
            continue
        new = text[: blocks[0].start()] + render(command, parser) + text[blocks[0].end():]
        if new != text:
            if check:
                problems.append(f"{page.relative_to(ROOT)}: options out of date (run scripts/cli_docs.py)")
            else:
                page.write_text(new)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report out-of-date pages instead of rewriting them")
    args = ap.parse_args(argv)
    problems = update(check=args.check)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
