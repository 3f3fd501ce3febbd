"""The package tree is the architecture: no module imports a part above its own (DESIGN section 5)."""

import ast
from pathlib import Path

import pytest

import neurotext

ROOT = Path(neurotext.__file__).parent

# The flow, bottom to top; a module may import its own tier and those below it.
TIERS = {
    "errors": 0,
    "files": 0,
    "model": 1,
    "corpus": 1,
    "engine": 2,
    "textualize": 3,
    "display": 3,
    "phrases": 3,
    "examples": 3,
    "dictionaries": 3,
    "store": 4,
    "analysis": 5,
    "atlas": 6,
    "cli": 7,
    "__main__": 7,
}


def part_of(module: str) -> str:
    """``neurotext.engine.scan`` -> ``engine``; the package facade ``neurotext`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, path


def imported(module: str, is_pkg: bool, path: Path):
    """Absolute names of the neurotext modules that ``path`` imports (lazy imports inside functions included)."""
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("neurotext"):
                continue
            if node.module is None or target == "neurotext":
                # ``from . import x`` names submodules (or the facade's attributes)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    yield sub if (ROOT.parent / (sub.replace(".", "/") + ".py")).exists() or \
                        (ROOT.parent / sub.replace(".", "/")).is_dir() else target
            else:
                yield target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("neurotext"):
                    yield a.name


def test_every_part_has_a_tier():
    parts = {part_of(m) for m, _, _ in modules()} - {"", "__init__"}
    assert parts <= set(TIERS), f"parts without a tier: {parts - set(TIERS)}"


@pytest.mark.parametrize("module,is_pkg,path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_upward_import(module, is_pkg, path):
    own = part_of(module)
    if own in ("", "__init__"):
        return  # the package facade re-exports the public API from every tier
    for target in imported(module, is_pkg, path):
        other = part_of(target)
        if other in ("", "__init__") or target == "neurotext":
            assert target in ("neurotext",) and own != "errors", f"{module} imports the facade {target}"
            continue
        assert TIERS[other] <= TIERS[own], f"{module} ({own}) imports {target} ({other}), a part above it"


def test_public_api_still_importable():
    from neurotext import FTConfig, Textualizer, textualize  # noqa: F401
    from neurotext.store import read_table  # noqa: F401

    assert callable(read_table) and callable(textualize)


def test_no_import_cycle_between_modules():
    """No two modules import each other, directly or through others (lazy imports inside functions count: a
    circle hidden in a function is still a circle a reader has to untangle)."""
    found = list(modules())
    names = {m for m, _, _ in found}
    graph = {m: {t for t in imported(m, is_pkg, path) if t != m and t in names} for m, is_pkg, path in found}
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if t.startswith(m + ".") or m.startswith(t + "."):
                continue  # a package and its own modules (the facade re-exports them)
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
