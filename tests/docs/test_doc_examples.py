"""The code examples of the README and of every documentation page run, as a reader would paste them.

Every fenced ```bash and ```python block of README.md and docs/**/*.md is an example. The blocks of one
page run in order in one fresh working directory (so a sweep's store is there for the report that
follows), on the bundled model, offline, with the test session's vocabulary-scan cache. The directory
holds a `.venv` link to the running virtual environment and links to the repository's `benchmarks/` and
`scripts/`, so the commands run exactly as written from the repository root (`.venv/bin/neurotext ...`);
PYTHONPATH puts this checkout's `src/` first. Python blocks run as scripts with this interpreter.

A block is run as it stands unless an HTML comment on the line right before its fence says otherwise
(the comment is invisible on GitHub and in the documentation site):

    <!-- example: slow -->                run only by `pytest -m slow` (minutes, or the 540 MB decoder);
                                          fast blocks never depend on a slow one
    <!-- example: findings, 70 min -->    regenerates a published figure or table: never run by the tests,
                                          and the comment must name its wall time (`~7 min`, `775 s`,
                                          `2.6 h`; a note in parentheses may follow)
    <!-- example: exit 2 -->              expected to fail: the block must exit with that status and print
                                          `neurotext: error: ...` (a `--device cuda` block is not checked on
                                          a machine with a GPU)
    <!-- example: serve -->               one `neurotext serve` command: started with `--port 0` (any free
                                          port) in place of its port, checked to print its URL and to answer
                                          it, then stopped
    <!-- example: skip: REASON -->        not run here (needs a GPU, network, or a model of your own); the
                                          reason is required

Other fences (```text output, ```sql) are not run. The README's tour and the command pages (docs/cli/) run in
the default suite without their slow blocks; `pytest -m slow tests/docs` runs every other page, and each page
that has slow blocks again with them.

A bash block made only of plain `.venv/bin/neurotext ...` commands (comments, backslash continuations and a final
`> FILE` allowed; no pipes, variables or other programs) runs each command in this process through
`neurotext.cli.main`, in the page's directory: the same code path as the console script, without a Python
start-up per command. Any other bash block runs in `bash -e -o pipefail`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: the README's tour and the command pages run in the default suite; the other pages' examples (the same
#: commands again, the Python guide, the decoder) run with -m slow
TOUR = [ROOT / "README.md", *sorted((ROOT / "docs" / "cli").glob("*.md"))]
RUN_LANGS = ("bash", "python")
MARKER = re.compile(r"^<!-- example: (?P<spec>.*?) -->\s*$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
DURATION = re.compile(r"~?\d[\d,.]*\s*(s|min|h)\b")
BLOCK_TIMEOUT = 900  # seconds; a fast block takes seconds, a slow one minutes


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    kind: str = "run"  # run | slow | findings | exit | serve | skip
    detail: str = ""  # findings: the wall time; exit: the status; skip: the reason

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_marker(spec: str) -> tuple[str, str]:
    """``slow`` -> ("slow", ""); ``findings, 13 min`` -> ("findings", "13 min"); ``exit 2`` -> ("exit", "2");
    ``serve``; ``skip: why`` -> ("skip", "why"). Anything else is a ValueError naming the valid forms."""
    spec = spec.strip()
    if spec in ("slow", "serve"):
        return spec, ""
    if spec.startswith("findings,") and DURATION.search(spec):
        return "findings", spec.split(",", 1)[1].strip()
    m = re.fullmatch(r"exit (\d+)", spec)
    if m:
        return "exit", m[1]
    m = re.fullmatch(r"skip:\s*(\S.*)", spec)
    if m:
        return "skip", m[1]
    raise ValueError(f"bad example marker {spec!r}: use 'slow', 'findings, <wall time>', 'exit N', 'serve' "
                     "or 'skip: <reason>'")


def page_blocks(page: Path) -> list[Block]:
    """Every fenced block of a page with its marker; raises ValueError on a marker not right before a fence."""
    lines = page.read_text().splitlines()
    out, marker, i = [], None, 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            marker = (i + 1, m["spec"])
            i += 1
            continue
        f = FENCE.match(lines[i])
        if f and f["lang"]:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            block = Block(page, i + 1, f["lang"], "\n".join(lines[i + 1:end]) + "\n")
            if marker is not None:
                block.kind, block.detail = parse_marker(marker[1])
                marker = None
            out.append(block)
            i = end + 1
            continue
        if marker is not None:
            raise ValueError(f"{page.relative_to(ROOT)}:{marker[0]}: the example marker is not on the line "
                             "right before a code fence")
        if f:  # a fence without a language: skip to its end
            i = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        i += 1
    return out


def runnable(page: Path, slow: bool) -> list[Block]:
    kinds = ("run", "exit", "serve") + (("slow",) if slow else ())
    return [b for b in page_blocks(page) if b.lang in RUN_LANGS and b.kind in kinds]


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    for name in ("benchmarks", "scripts"):
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    return work


def _env(work: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(work / ".venv" / "bin"), env.get("PATH", "")))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


def _command(block: Block, work: Path) -> list[str]:
    if block.lang == "python":
        script = work / f"_example_line{block.line}.py"
        script.write_text(block.code)
        return [sys.executable, str(script)]
    return ["bash", "-e", "-o", "pipefail", "-c", block.code]


def neurotext_commands(code: str) -> list[tuple[list[str], str | None]] | None:
    """The (argv, stdout file) of each command when a bash block is only ``.venv/bin/neurotext ...`` lines,
    else None."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            return None
        if not words:
            continue
        if words[0] != ".venv/bin/neurotext" or any(w in ("|", "||", "&&", ";", "<", "2>", "&") for w in words):
            return None
        if any(w.startswith("$") or "$(" in w for w in words):
            return None
        out = None
        if ">" in words:
            if words.index(">") != len(words) - 2:
                return None
            out = words[-1]
            words = words[:-2]
        commands.append((words[1:], out))
    return commands or None


def _main_in(work: Path, argv: list[str]) -> tuple[int, str, str]:
    """``neurotext ARGV`` in this process with ``work`` as the working directory: (status, stdout, stderr)."""
    from neurotext.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as e:  # --help, --version
                status = e.code if isinstance(e.code, int) else 0
    finally:
        os.chdir(here)
    return status, out.getvalue(), err.getvalue()


def _tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def run_block(block: Block, work: Path, env: dict) -> None:
    if block.kind == "serve":
        return _run_serve(block, work, env)
    if block.kind == "exit" and "--device cuda" in block.code:
        import torch

        if torch.cuda.is_available():
            return  # the failure it documents is that of a machine without CUDA
    commands = neurotext_commands(block.code) if block.lang == "bash" else None
    if commands is None:
        out = subprocess.run(_command(block, work), cwd=work, env=env, capture_output=True, text=True,
                             timeout=BLOCK_TIMEOUT)
        results = [(block.code, out.returncode, out.stdout, out.stderr)]
    else:
        results = []
        for argv, stdout_file in commands:
            status, stdout, stderr = _main_in(work, argv)
            if stdout_file is not None:
                (work / stdout_file).write_text(stdout)
            results.append(("neurotext " + shlex.join(argv), status, stdout, stderr))
            if status != 0:
                break
    for what, status, stdout, stderr in results:
        report = (f"{block.where} ({block.lang}, exit {status}):\n{what}\n--- stdout\n"
                  f"{_tail(stdout)}\n--- stderr\n{_tail(stderr)}")
        if block.kind == "exit":
            assert status == int(block.detail), report
            assert any(line.startswith("neurotext: error: ") for line in stderr.splitlines()), report
        else:
            assert status == 0, report


def _run_serve(block: Block, work: Path, env: dict) -> None:
    code = block.code.strip()
    assert code.count("\n") == 0 and "neurotext serve" in code, f"{block.where}: one serve command per block"
    code = re.sub(r"--port\s+\d+", "--port 0", code)
    if "--port" not in code:
        code = re.sub(r"(neurotext serve\s+\S+)", r"\1 --port 0", code)
    proc = subprocess.Popen(["bash", "-c", code], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        deadline = time.monotonic() + 300
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"http://127\.0\.0\.1:\d+/", line)
            url = m[0] if m else None
        assert url, f"{block.where}: no URL printed:\n{''.join(seen)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and b"neurotext" in r.read().lower(), f"{block.where}: {url} did not answer"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


FAST = [p for p in TOUR if runnable(p, slow=False)]
SLOW = [p for p in PAGES if (p not in TOUR and runnable(p, slow=True))
        or any(b.kind == "slow" for b in page_blocks(p) if b.lang in RUN_LANGS)]


def test_markers_are_valid():
    """Every marker parses and sits right before a code block; every findings block names its wall time."""
    for page in PAGES:
        for b in page_blocks(page):
            if b.kind != "run":
                assert b.lang in RUN_LANGS, f"{b.where}: a marker on a ```{b.lang} block, which is never run"
            if b.kind == "findings":
                assert DURATION.search(b.detail), f"{b.where}: a findings block must name its wall time"


def test_readme_tour_runs_something():
    assert ROOT / "README.md" in FAST and len(runnable(ROOT / "README.md", slow=False)) >= 5


def _run_page(page, tmp_path, slow: bool) -> None:
    work, blocks = _workdir(tmp_path), runnable(page, slow=slow)
    env = _env(work)
    for block in blocks:
        run_block(block, work, env)


@pytest.mark.parametrize("page", FAST, ids=_page_id)
def test_page_examples(page, tmp_path):
    _run_page(page, tmp_path, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW, ids=_page_id)
def test_page_examples_with_slow_blocks(page, tmp_path):
    _run_page(page, tmp_path, slow=True)
