"""Plain-text rendering of neuron results for the terminal."""

from __future__ import annotations


def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def render_result(r) -> str:
    """One neuron: FT nearest tokens beside the best real tokens, then the metrics."""
    near, best = r.nearest, r.best_tokens
    width = max([len(d["token"]) for d in near + best] + [12])
    lines = [
        f"{r.neuron}  ({r.model})",
        f"  activation {r.activation:.4f} (pre-activation {r.pre_activation:.4f})   "
        f"best real token {best[0]['activation']:.4f} ({best[0]['token']!r})" if best else "",
        f"  nearest-token activation {r.nearest_activation:.4f}   retention {_fmt(r.retention)}   "
        f"overlap@10 {r.overlap_at_10:.2f}",
        f"  {'FT nearest tokens':<{width + 9}}   {'best real tokens (vocabulary scan)'}",
        f"  {'token':<{width}}  {'cosine':>7}   {'token':<{width}}  {'activation':>10}",
    ]
    for i in range(max(len(near), len(best))):
        left = f"{near[i]['token']:<{width}}  {near[i]['cosine']:>7.3f}" if i < len(near) else " " * (width + 9)
        right = f"{best[i]['token']:<{width}}  {best[i]['activation']:>10.4f}" if i < len(best) else ""
        lines.append(f"  {left}   {right}")
    for label, side in (("promotes", getattr(r, "promotes", None)), ("suppresses", getattr(r, "suppresses", None))):
        if side:
            lines.append(f"  writes: {label:<10} " + ", ".join(f"{d['token']!r} {d['logit']:+.2f}" for d in side))
    if getattr(r, "readout", ""):
        lines.append(f"  (read out through the {r.readout})")
    lines.append(f"  steps {r.steps} x {r.restarts} restarts, seed {r.seed}, {r.seconds:.2f} s")
    return "\n".join(line for line in lines if line)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_cell(x) for x in v[:5])
        return f"[{inner}{', ...' if len(v) > 5 else ''}]"
    return "NULL" if v is None else str(v)


def render_table(columns: list[str], rows: list[tuple]) -> str:
    """A plain aligned text table; long lists are abbreviated."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
