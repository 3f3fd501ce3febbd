"""Plain-text rendering of neuron results for the terminal."""

from __future__ import annotations


def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def stability_line(st, restarts: int) -> str:
    """One line saying how far the restarts agree (``st``: the ``stability`` record, None for old results)."""
    if st is None:
        return ("  stability: not in this store (written before per-restart results were kept; "
                "rerun its sweep with --force to recompute)")
    if st["restarts"] < 2:
        return (f"  stability: only {st['restarts']} of {restarts} restart(s) counted (within the tolerance of the "
                f"best): nothing to compare, so nothing here is known to be reproducible")
    verdict = "restarts DISAGREE: no token is shared by half of them" if not st["consensus"] else \
        f"{len(st['consensus'])} consensus token(s)"
    return (f"  stability: {st['restarts']} of {restarts} restarts counted, cosine {_fmt(st['cosine'])}, "
            f"jaccard@10 {_fmt(st['jaccard_at_10'])}, activation spread {_fmt(st['activation_spread'])}; {verdict}")


def centroid_line(c, activation: float) -> str:
    """The headline read-out: the nearest tokens of the normalized mean of the counted restarts' optima
    (measured more reproducible across seeds than any single optimum's, see docs/findings/stability.md)."""
    if c is None or c.get("restarts", 0) < 2:
        return ""
    share = f" = {c['activation'] / activation:.2f} of the best restart's" if activation > 0 else ""
    return (f"  centroid of the {c['restarts']} counted restarts (the reproducible read-out; activation "
            f"{c['activation']:.4f}{share}):\n    " + ", ".join(t["token"] for t in c["nearest"]))


def render_result(r) -> str:
    """One neuron: the consensus of its restarts, the best restart's nearest tokens and the best real
    tokens side by side, then the metrics and how reproducible the textualization is."""
    near, best = r.nearest, r.best_tokens
    cons = (r.stability or {}).get("consensus") or []
    width = max([len(d["token"]) for d in near + best + cons] + [22])
    lines = [
        f"{r.neuron}  ({r.model})",
        f"  activation {r.activation:.4f} (pre-activation {r.pre_activation:.4f})   "
        f"best real token {best[0]['activation']:.4f} ({best[0]['token']!r})" if best else "",
        f"  nearest-token activation {r.nearest_activation:.4f}   retention {_fmt(r.retention)}   "
        f"overlap@10 {r.overlap_at_10:.2f}",
        stability_line(r.stability, r.restarts),
        centroid_line(r.centroid, r.activation),
        f"  {'consensus of restarts':<{width + 9}}   {'FT nearest tokens, best restart':<{width + 9}}   "
        f"{'best real tokens (vocabulary scan)'}",
        f"  {'token':<{width}}  {'support':>7}   {'token':<{width}}  {'cosine':>7}   {'token':<{width}}  "
        f"{'activation':>10}",
    ]
    blank = " " * (width + 9)
    for i in range(max(len(near), len(best), len(cons))):
        c = f"{cons[i]['token']:<{width}}  {cons[i]['support']:>7.2f}" if i < len(cons) else \
            (f"{'(none)':<{width + 9}}" if i == 0 else blank)
        left = f"{near[i]['token']:<{width}}  {near[i]['cosine']:>7.3f}" if i < len(near) else blank
        right = f"{best[i]['token']:<{width}}  {best[i]['activation']:>10.4f}" if i < len(best) else ""
        lines.append(f"  {c}   {left}   {right}".rstrip())
    if len(r.restarts_detail) > 1:
        lines.append("  every restart, best first (activation: nearest tokens):")
        for d in r.restarts_detail:
            tokens = ", ".join(t["token"] for t in d["nearest"])
            lines.append(f"    #{d['restart']:<3} {d['activation']:>9.4f}: {tokens}")
    for label, side in (("promotes", getattr(r, "promotes", None)), ("suppresses", getattr(r, "suppresses", None))):
        if side:
            lines.append(f"  writes: {label:<10} " + ", ".join(f"{d['token']!r} {d['logit']:+.2f}" for d in side))
    if getattr(r, "readout", ""):
        lines.append(f"  (read out through the {r.readout})")
    lines.append(f"  steps {r.steps} x {r.restarts} restarts, seed {r.seed}, {r.seconds:.2f} s")
    return "\n".join(line for line in lines if line)


def render_phrases(r, header: bool = True) -> str:
    """One neuron's best real phrases, one line per length, beside FT and the best single token."""
    ft = "n/a (run with --with-ft)" if r.ft_activation is None else f"{r.ft_activation:.4f}"
    lines = [f"{r.neuron}  ({r.model})" if header else "  best real phrases",
             f"  FT activation {ft}   best single token {r.best_token_activation:.4f}",
             f"  {'n':>2}  {'activation':>10}  {'/ token':>7}  {'/ FT':>5}  {'pos':>3}  phrase"]
    for p in r.phrases:
        tok = p["activation"] / r.best_token_activation if r.best_token_activation > 0 else None
        ftr = p["activation"] / r.ft_activation if r.ft_activation and r.ft_activation > 0 else None
        text = " ".join(t["token"] for t in p["tokens"])
        lines.append(f"  {p['length']:>2}  {p['activation']:>10.4f}  {_fmt(tok, '7.2f'):>7}  {_fmt(ftr, '5.2f'):>5}  "
                     f"{p['position']:>3}  {text!r}")
    b = r.best_phrase
    lines.append(f"  best phrase: length {b['length']}, {b['activation']:.4f}: {b['text']!r}   "
                 + (f"({r.seconds:.2f} s, seed {r.seed})" if r.seconds else f"(seed {r.seed})"))
    return "\n".join(lines)


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
