"""Plain-text rendering of neuron results for the terminal.

Tokens are shown by the convention of :mod:`neurotext.model.tokens` (``Ġfurniture`` as ``␣furniture``).
"""

from __future__ import annotations

from ..model.tokens import CONVENTION, DECODED, detect_kind, display_token


def _shower(r, tokens):
    """The function that shows a result's tokens: by its ``token_kind``, else by the kind ``tokens`` show."""
    kind = getattr(r, "token_kind", "") or detect_kind(tokens)
    return kind, (lambda t: display_token(t, kind))


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


def support_lines(support: dict | None, name: str) -> list[str]:
    """A dictionary feature's neuron support (:func:`neurotext.model.dictionary.neuron_support`), two lines;
    nothing for a neuron."""
    if not support:
        return []
    prefix = name.rsplit(".f", 1)[0]  # L3.ffn.f12 -> L3.ffn: the neurons of the feature's site
    out = [f"  neuron support (of {support['d']} neurons of {prefix}: fewest carrying 90% of the squared weight; "
           "participation ratio):"]
    for side in ("encoder", "decoder"):
        s = support[side]
        tops = ", ".join(f"{prefix}.{u} {w:+.3g}" for u, w in zip(s["top_units"][:5], s["top_weights"][:5]))
        out.append(f"    {side:<8} {s['k90']:>5} neurons, PR {s['participation_ratio']:.1f}; top: {tops}")
    return out


def _all_tokens(r) -> list[str]:
    lists = [r.nearest, r.best_tokens, getattr(r, "promotes", []), getattr(r, "suppresses", [])]
    return [d["token"] for side in lists for d in side]


def render_result(r) -> str:
    """One neuron: the consensus of its restarts, the best restart's nearest tokens and the best real
    tokens side by side, then the metrics and how reproducible the textualization is. Tokens are shown
    decoded (:mod:`neurotext.model.tokens`)."""
    kind, show = _shower(r, _all_tokens(r))
    near = [{**d, "token": show(d["token"])} for d in r.nearest]
    best = [{**d, "token": show(d["token"])} for d in r.best_tokens]
    cons = [{**d, "token": show(d["token"])} for d in (r.stability or {}).get("consensus") or []]
    width = max([len(d["token"]) for d in near + best + cons] + [22])
    centroid = None if r.centroid is None else \
        {**r.centroid, "nearest": [{**d, "token": show(d["token"])} for d in r.centroid["nearest"]]}
    lines = [
        f"{r.neuron}  ({r.model})",
        f"  activation {r.activation:.4f} (pre-activation {r.pre_activation:.4f})   "
        f"best real token {best[0]['activation']:.4f} ({best[0]['token']!r})" if best else "",
        f"  nearest-token activation {r.nearest_activation:.4f}   retention {_fmt(r.retention)}   "
        f"overlap@10 {r.overlap_at_10:.2f}",
        stability_line(r.stability, r.restarts),
        centroid_line(centroid, r.activation),
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
            tokens = ", ".join(show(t["token"]) for t in d["nearest"])
            lines.append(f"    #{d['restart']:<3} {d['activation']:>9.4f}: {tokens}")
    for label, side in (("promotes", getattr(r, "promotes", None)), ("suppresses", getattr(r, "suppresses", None))):
        if side:
            lines.append(f"  writes: {label:<10} " + ", ".join(f"{show(d['token'])!r} {d['logit']:+.2f}"
                                                                for d in side))
    if getattr(r, "readout", ""):
        lines.append(f"  (read out through the {r.readout})")
    lines += support_lines(getattr(r, "support", None), r.neuron)
    if kind in DECODED:
        lines.append(f"  ({CONVENTION})")
    lines.append(f"  steps {r.steps} x {r.restarts} restarts, seed {r.seed}, {r.seconds:.2f} s")
    return "\n".join(line for line in lines if line)


def render_phrases(r, header: bool = True) -> str:
    """One neuron's best real phrases, one line per length, beside FT and the best single token; the tokens
    of a phrase are shown decoded (:mod:`neurotext.model.tokens`), its text as the tokenizer decodes it."""
    kind, show = _shower(r, [t["token"] for p in r.phrases for t in p["tokens"]])
    ft = "n/a (run with --with-ft)" if r.ft_activation is None else f"{r.ft_activation:.4f}"
    lines = [f"{r.neuron}  ({r.model})" if header else "  best real phrases",
             f"  FT activation {ft}   best single token {r.best_token_activation:.4f}",
             f"  {'n':>2}  {'activation':>10}  {'/ token':>7}  {'/ FT':>5}  {'pos':>3}  phrase"]
    for p in r.phrases:
        tok = p["activation"] / r.best_token_activation if r.best_token_activation > 0 else None
        ftr = p["activation"] / r.ft_activation if r.ft_activation and r.ft_activation > 0 else None
        text = " ".join(show(t["token"]) for t in p["tokens"])
        lines.append(f"  {p['length']:>2}  {p['activation']:>10.4f}  {_fmt(tok, '7.2f'):>7}  {_fmt(ftr, '5.2f'):>5}  "
                     f"{p['position']:>3}  {text!r}")
    b = r.best_phrase
    lines.append(f"  best phrase: length {b['length']}, {b['activation']:.4f}: {b['text']!r}   "
                 + (f"({r.seconds:.2f} s, seed {r.seed})" if r.seconds else f"(seed {r.seed})"))
    if kind in DECODED:
        lines.append(f"  ({CONVENTION})")
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


def marked_text(e: dict, width: int = 70) -> str:
    """An example's text on one line with its max token in ⟦ ⟧, cut to about ``width`` characters each side."""
    pos, spans, text = e["position"], e.get("spans") or [], e["text"]
    span = spans[pos] if pos < len(spans) else None
    if span is None:
        left = text
        mid, right = e["tokens"][pos], ""
    else:
        left, mid, right = text[:span[0]], text[span[0]:span[1]], text[span[1]:]
    left = left[-width:] if len(left) > width else left
    right = right[:width] if len(right) > width else right

    def flat(s):
        return " ".join(s.split("\n")).replace("\t", " ")

    return f"{flat(left)}⟦{flat(mid)}⟧{flat(right)}"


def render_examples(r) -> str:
    """One neuron's corpus examples: statistics, the top contexts with the max token marked, range samples and
    random contexts."""
    st = r.stats
    share = st.get("share_positive")
    lines = [f"{r.neuron}  ({r.model}; corpus {r.corpus['name']}: {r.contexts} contexts, {r.tokens} text tokens)",
             f"  max {_fmt(st['max'], '.4f')}   mean {_fmt(st['mean'], '.4f')}   std {_fmt(st['std'], '.4f')}   "
             f"above 0 at {_fmt(None if share is None else 100 * share, '.1f')}% of positions",
             "  top contexts (activation, position, text with the max token in ⟦ ⟧):"]
    for i, e in enumerate(r.top, 1):
        lines.append(f"  {i:>3}  {e['activation']:>9.4f}  @{e['position']:<3}  {marked_text(e)}")
    if r.ranges:
        lines.append("  samples from ranges below the top (uniform within each range):")
        for g in r.ranges:
            lines.append(f"    ({g['lo']:.4g}, {g['hi']:.4g}]: {g['contexts']} contexts")
            for e in g["examples"]:
                lines.append(f"       {e['activation']:>9.4f}  @{e['position']:<3}  {marked_text(e)}")
    if r.random:
        lines.append("  random contexts:")
        for e in r.random[:5]:
            lines.append(f"       {e['activation']:>9.4f}  @{e['position']:<3}  {marked_text(e)}")
        if len(r.random) > 5:
            lines.append(f"       ... {len(r.random) - 5} more (--json shows all)")
    return "\n".join(lines)
