"""HTML of the atlas: the index page and one page per neuron.

Token strings are untrusted (vocabularies hold ``<``, ``>``, ``&`` and quotes, and a user's model can hold
anything), so every value goes through :func:`esc` in HTML and :func:`script_json` in JSON meant for a
page. Pages carry a Content-Security-Policy that allows only the site's own scripts (none at all on a
neuron page), as a second line of defence.
"""

from __future__ import annotations

import html
import json
import math
from urllib.parse import quote

from ..analysis.plots import curve_svg

#: Index page: only the site's own script files; neuron pages: no script at all.
CSP_INDEX = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
             "base-uri 'none'; form-action 'none'")
#: Short description of each site for page subtitles (DESIGN.md section 2).
SITE_LABELS = {"ffn": "FFN intermediate neuron", "out": "output hidden-state dimension"}
CSP_NEURON = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; " \
             "form-action 'none'"


def esc(value) -> str:
    """Text for HTML element content or a quoted attribute value."""
    return html.escape(str(value), quote=True)


def script_json(obj) -> str:
    """JSON that is safe inside a ``<script>`` element or a JS file: ``<``, ``>``, ``&``, U+2028 and
    U+2029 are written as ``\\uXXXX`` escapes (they can only occur inside strings, where that is valid)."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch in ("<", ">", "&", "\u2028", "\u2029"):
        s = s.replace(ch, f"\\u{ord(ch):04x}")
    return s


def fmt(v, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def document(title: str, body: str, css: str, csp: str, scripts: tuple[str, ...] = (), kind: str = "") -> str:
    """A whole HTML page; ``css`` and ``scripts`` are relative URLs of files in the site; ``kind`` is the
    body's class."""
    tags = "".join(f'<script src="{esc(s)}" defer></script>' for s in scripts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">'
            f'<title>{esc(title)}</title><link rel="stylesheet" href="{esc(css)}">{tags}</head>\n'
            f'<body class="{esc(kind)}">{body}</body></html>\n')


def token_html(token: str, href: str | None = None, cls: str = "tok") -> str:
    """One token as a chip; an empty token is shown as the empty-set sign."""
    text, extra = (esc(token), "") if token != "" else ("\u2205", " empty")
    if href is None:
        return f'<span class="{cls}{extra}">{text}</span>'
    return f'<a class="{cls}{extra}" href="{esc(href)}" title="neurons with this token">{text}</a>'


def search_href(token: str, prefix: str = "../") -> str:
    """Link to the index's token search."""
    return f"{prefix}index.html#q={quote(token, safe='')}"


def _kv_table(rows: list[tuple[str, object]]) -> str:
    return "<table class=\"kv\">" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) \
        + "</table>"


# --------------------------------------------------------------------------- index
def stability_section(stab: dict | None) -> str:
    """Q1's stability arm on the index: the per-layer figure and table, or one line for an old store."""
    if stab is None:
        return ('<h3 id="stability">How reproducible is a textualization?</h3><p class="note warn">This store was '
                'written before per-restart results were kept, so stability is not available; recompute it with '
                '<code>neurotext sweep ... --force</code>.</p>')
    head = ["layer", "site", "neurons (2+ restarts)", "Jaccard@10: restarts", "Jaccard@10: chance",
            "cosine: restarts", "cosine: chance", "reproducible"]

    def med(g, stat, src, spec=".3f"):
        return fmt(g["stats"][stat][src]["median"], spec)

    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in (
        f"L{g['layer']}", g["site"], g["n_with_two_restarts"], med(g, "jaccard_at_10", "ft"),
        med(g, "jaccard_at_10", "baseline"), med(g, "cosine", "ft"), med(g, "cosine", "baseline"),
        f"{fmt(g['reproducible'], '.1%')} ({g['n_reproducible']})")) + "</tr>" for g in stab["groups"])
    return ('<h3 id="stability">How reproducible is a textualization?</h3>'
            '<p class="lead">A neuron has many nearly equally good FT optima. Each restart of the optimization finds '
            'one; these figures say how far the restarts of the same neuron agree (their vectors\' cosine, the '
            'overlap of their 10 nearest tokens) beside what optima of <em>different</em> neurons of the same '
            'layer share by chance. Read a neuron\'s tokens through its consensus: tokens that one optimum shows '
            'and the others do not are a sample, not the neuron\'s representation.</p>'
            f'<img class="plot" src="{esc(stab["plot"])}" alt="stability per layer against the chance baseline" '
            'width="1100" height="360">'
            f'<table class="stats"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{body}</tbody></table><p class="note">{esc(stab["rule"])}; medians.</p>')


def index_page(manifest: dict, stats: list[dict], n_neurons: int, q1_plot: str | None, q2: dict | None,
               word_like_rule: str, stability: dict | None = None) -> str:
    """The atlas front page; the neuron table itself is filled in by ``assets/atlas.js`` from
    ``data/neurons.js`` (loaded asynchronously, rendered a page at a time).

    Args:
        manifest: the store's ``manifest.json``.
        stats: per (layer, site) Q1 summaries (see :func:`neurotext.atlas.report.layer_stats`).
        n_neurons: rows in the store.
        q1_plot, q2: relative URL of the Q1 figure; ``{"plot", "model", "site", "objective", "words",
            "skipped", "source"}`` for Q2, or None when absent.
        word_like_rule: how a word-like neuron is defined (shown under the table).
        stability: ``{"plot", "rule", "groups"}`` of the stability arm, None for a store without it.
    """
    model, cfg = manifest.get("model", {}), manifest.get("config", {})
    name = model.get("name", "?")
    sizes = ", ".join(f"{k} {v}" for k, v in (model.get("sizes") or {}).items())
    model_rows = [("name", name), ("type", model.get("model_type", "?")), ("source", model.get("source", "?")),
                  ("weights fingerprint", model.get("fingerprint", "?")), ("layers", model.get("n_layers", "?")),
                  ("units per layer", sizes), ("vocabulary", model.get("vocab_size", "?")),
                  ("embedding size", model.get("d_emb", "?"))]
    sweep_rows = [("neurons", f"{n_neurons} of {manifest.get('neurons', {}).get('count', '?')} planned")]
    sweep_rows += [(k, v) for k, v in sorted(cfg.items())]
    sweep_rows += [("created", manifest.get("created", "?")), ("neurotext", manifest.get("neurotext_version", "?"))]

    head = ["layer", "site", "neurons", "median nearest cosine", "median retention", "mean overlap@10",
            "median FT / best-token activation", "word-like"]
    body_rows = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in (
            f"L{s['layer']}", s["site"], s["n"], fmt(s["nearest_cosine"], ".3f"), fmt(s["retention"], ".3f"),
            fmt(s["overlap_at_10"], ".3f"), fmt(s["act_ratio"], ".3g"),
            f"{fmt(s['word_like'], '.1%')} ({s['word_like_n']})")) + "</tr>" for s in stats)
    q1 = ('<section id="q1"><h2>Q1 &middot; Do single neurons encode words?</h2>'
          '<p class="lead">Per layer: how close each FT vector is to its nearest token, how much activation '
          'survives when the FT vector is replaced by that token (retention), how many of its 10 nearest tokens '
          'are among the 10 best real tokens of the exhaustive vocabulary scan, and how far the FT activation '
          'exceeds the best any real token reaches.</p>'
          + (f'<img class="plot" src="{esc(q1_plot)}" alt="Q1 statistics per layer" width="1100" height="660">'
             if q1_plot else "")
          + f'<table class="stats"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{body_rows}</tbody></table><p class="note">{esc(word_like_rule)}</p>'
            f'{stability_section(stability)}</section>')
    q2_html = ""
    if q2:
        info = [("model", q2.get("model")), ("site", q2.get("site")), ("objective", q2.get("objective")),
                ("words", q2.get("words")), ("skipped", q2.get("skipped")), ("from", q2.get("source"))]
        q2_html = (f'<section id="q2"><h2>Q2 &middot; How many neurons are needed to encode a word?</h2>'
                   f'<p class="lead">For each word, the k units most specific to it (z-score against the vocabulary '
                   f'scan; solid) or k random units (the control; dashed) are driven towards the word\'s own '
                   f'activation pattern; the curve is the share of words that come back as the FT vector\'s '
                   f'nearest token (left) or among its 10 nearest (right).</p>'
                   f'<img class="plot" src="{esc(q2["plot"])}" alt="Q2 recovery curves" width="1100" height="400">'
                   + _kv_table([(k, v) for k, v in info if v is not None]) + "</section>")
    table = ('<section id="neurons"><h2>Neurons</h2>'
             '<div class="controls">'
             '<input id="q" type="search" autocomplete="off" spellcheck="false" '
             'placeholder="token (e.g. rain) or neuron (e.g. L3.ffn.42)" aria-label="search neurons">'
             '<select id="where" aria-label="which tokens to search">'
             '<option value="both">consensus, nearest &amp; best tokens</option>'
             '<option value="consensus">consensus of restarts</option>'
             '<option value="nearest">FT nearest tokens (best restart)</option>'
             '<option value="best">best real tokens</option>'
             + ('<option value="phrase">best real phrase</option>' if "phrases" in manifest else "")
             + '</select>'
             '<label><input id="partial" type="checkbox"> partial match</label>'
             '<span id="count" class="muted" aria-live="polite">loading neurons&hellip;</span></div>'
             '<div class="tablewrap"><table id="table" class="neurons"><thead><tr></tr></thead><tbody></tbody>'
             '</table></div>'
             '<div class="pager"><button id="prev" type="button">&larr; previous</button>'
             '<span id="page" class="muted"></span><button id="next" type="button">next &rarr;</button>'
             '<select id="per" aria-label="rows per page"><option>50</option><option selected>100</option>'
             '<option>500</option></select></div>'
             '<noscript><p>The neuron table needs JavaScript; every neuron also has a page at '
             'neurons/NAME.html.</p></noscript></section>')
    meta = {"n": n_neurons, "model": name, "phrases": "phrases" in manifest}
    q2_link = '<a href="#q2">Q2</a>' if q2 else ""
    body = (f'<header><div class="brand">neurotext atlas</div><h1>{esc(name)}</h1>'
            f'<p class="lead">Feature textualization of {n_neurons} neurons: for each, the vector in word-embedding '
            f'space that maximizes it, the real tokens nearest to that vector, and the best real tokens.</p>'
            f'<nav class="toc"><a href="#config">model &amp; sweep</a><a href="#q1">Q1</a>'
            f'{q2_link}<a href="#neurons">neurons</a></nav></header>'
            f'<main><section id="config" class="cols"><div><h2>Model</h2>{_kv_table(model_rows)}</div>'
            f'<div><h2>Sweep</h2>{_kv_table(sweep_rows)}</div></section>{q1}{q2_html}{table}</main>'
            f'<script type="application/json" id="atlas-meta">{script_json(meta)}</script>')
    return document(f"neurotext atlas: {name}", body, "assets/atlas.css", CSP_INDEX, ("assets/atlas.js",), "index")


# --------------------------------------------------------------------------- neuron page
def _bar(fraction: float, cls: str) -> str:
    w = 0.0 if not math.isfinite(fraction) else max(0.0, min(1.0, fraction)) * 100
    return f'<span class="bar {cls}"><span style="width:{w:.1f}%"></span></span>'


def _writes_section(row: dict) -> str:
    """The output side: tokens the neuron's output vector promotes and suppresses (empty for older stores)."""
    sides = []
    for key, title in (("promotes", "Promotes"), ("suppresses", "Suppresses")):
        toks = list(zip(row.get(f"{key}_tokens") or [], row.get(f"{key}_logits") or []))
        if not toks:
            continue
        scale = max(abs(v) for _, v in toks) or 1e-12
        body = "".join(f'<tr><td class="rank">{rank}</td><td>{token_html(t, search_href(t))}</td>'
                       f'<td class="barcell">{_bar(abs(v) / scale, "cos")}</td>'
                       f'<td class="num">{fmt(v, "+.3f")}</td></tr>'
                       for rank, (t, v) in enumerate(toks, 1))
        sides.append(f'<div><h2>{title}</h2><p class="note">what it writes: logit of each token when its output '
                     f'vector is read out</p><table class="toks">{body}</table></div>')
    if not sides:
        return ""
    how = f" through the {esc(row['readout'])}" if row.get("readout") else ""
    return (f'<section class="cols writes">{"".join(sides)}</section><p class="note">Output side: the neuron\'s '
            f'output weight vector read out into the vocabulary{how}; the input side (above) is what it reads.</p>')


def _neighbour(name: str | None, arrow: str, before: bool) -> str:
    if name is None:
        return '<span class="muted">&mdash;</span>'
    label = f"{arrow} {esc(name)}" if before else f"{esc(name)} {arrow}"
    return f'<a href="{esc(name)}.html">{label}</a>'


def unit_words(model_type: str | None) -> dict:
    """How a page words an ffn unit's values for the store's architecture (``manifest["model"]["model_type"]``):
    what "activation" is, what is optimized, and the template."""
    from ..model.adapters import ARCHITECTURES

    arch = ARCHITECTURES.get(model_type or "")
    gated = arch is not None and getattr(arch, "gate", None) is not None
    decoder = arch is not None and arch.decoder
    return {
        "activation": " (act(gate) x up: the value the down projection reads)" if gated
        else " (after the activation function)",
        "pre_activation": "equal to the activation: for a gated MLP act(gate) x up itself is optimized" if gated
        else "before the activation function (the optimized quantity)",
        "objective": "activation" if gated else "pre-activation",
        "after": "" if gated else " (after the activation function)",
        "template": "BOS t1 ... tn" if decoder else "[CLS] t1 ... tn [SEP]",
        "first": "BOS" if decoder else "[CLS]",
    }


def neuron_page(row: dict, model_name: str, prev_name: str | None, next_name: str | None,
                model_type: str | None = None) -> str:
    """One neuron: tokens with bars, metrics, the optimization curve, links to neighbouring units.

    Args:
        row: the store row (see :func:`neurotext.store.schema`); ``vector`` is not needed.
        model_name: shown under the title.
        prev_name, next_name: canonical names of unit-1 and unit+1 when they are in the store.
        model_type: the store's ``config.model_type``: words the ffn values for its architecture.
    """
    words = unit_words(model_type)
    name, site = row["neuron"], row["site"]
    near = list(zip(row["nearest_tokens"] or [], row["nearest_ids"] or [], row["nearest_cosines"] or []))
    best = list(zip(row["best_tokens"] or [], row["best_ids"] or [], row["best_activations"] or []))
    shared = {i for _, i, _ in near[:10]} & {i for _, i, _ in best[:10]}
    act, best_act = row["activation"], row["best_activation"]
    ratio = act / best_act if act is not None and best_act and best_act > 0 else None

    def rows_near():
        out = []
        for rank, (tok, tid, cos) in enumerate(near, 1):
            mark = ' class="shared" title="also among the best real tokens"' if tid in shared else ""
            out.append(f'<tr{mark}><td class="rank">{rank}</td><td>{token_html(tok, search_href(tok))}</td>'
                       f'<td class="barcell">{_bar(cos, "cos")}</td><td class="num">{fmt(cos, ".3f")}</td></tr>')
        return "".join(out)

    scale = max([v for v in (act, best_act) if v is not None and math.isfinite(v)] + [1e-12])

    def rows_best():
        out = [f'<tr class="ft"><td class="rank"></td><td><span class="tok ftvec">FT vector x</span></td>'
               f'<td class="barcell">{_bar((act or 0) / scale, "ftact")}</td><td class="num">{fmt(act)}</td></tr>']
        for rank, (tok, tid, a) in enumerate(best, 1):
            mark = ' class="shared" title="also among the FT nearest tokens"' if tid in shared else ""
            out.append(f'<tr{mark}><td class="rank">{rank}</td><td>{token_html(tok, search_href(tok))}</td>'
                       f'<td class="barcell">{_bar(a / scale, "act")}</td><td class="num">{fmt(a)}</td></tr>')
        return "".join(out)

    metrics = [
        ("activation", fmt(act), "the neuron's value at x's position" + (words["activation"] if site == "ffn" else "")),
        ("pre-activation", fmt(row["pre_activation"]), words["pre_activation"]
         if site == "ffn" else "equal to the activation for an output dimension"),
        ("best real token", fmt(best_act), "highest activation of any single vocabulary token"),
        ("FT / best token", fmt(ratio, ".3g"), "how far the FT vector exceeds every real token"),
        ("nearest-token activation", fmt(row["nearest_activation"]), "activation with x replaced by its nearest token"),
        ("retention", fmt(row["retention"], ".3f"), "nearest-token activation / activation"),
        ("overlap@10", fmt(row["overlap_at_10"], ".2f"), "share of the 10 nearest tokens among the 10 best tokens"),
        ("nearest cosine", fmt(row["nearest_cosine"], ".3f"), "cosine between x and its nearest token"),
    ]
    cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div>'
                    f'<div class="hint">{esc(h)}</div></div>' for k, v, h in metrics)
    reproducible_html, restarts_html = _stability_html(row)
    curve_label = words["objective"] if site == "ffn" else "activation"
    svg = curve_svg(row.get("curve") or [], reference=best_act if site == "out" else None, label=curve_label,
                    width=720, height=200, max_points=120)
    curve_note = (f"Objective of the best restart at every Adam step: the {curve_label} at x's position"
                  + (". The dashed line is the best real token's activation." if site == "out" else
                     f"; the best real token reaches an activation{words['after']} of {fmt(best_act)}."))
    nav = (f'<nav class="crumbs"><a href="../index.html">&larr; atlas index</a><span class="sep"></span>'
           f'{_neighbour(prev_name, "&lsaquo;", True)}<span class="sep"></span>'
           f'{_neighbour(next_name, "&rsaquo;", False)}</nav>')
    body = (f'{nav}<header><div class="brand">neurotext atlas &middot; {esc(model_name)}</div>'
            f'<h1>{esc(name)}</h1><p class="lead">layer {esc(row["layer"])} &middot; '
            f'{esc(SITE_LABELS.get(site, site))} &middot; unit {esc(row["unit"])}</p></header><main>'
            f'{reproducible_html}'
            f'<section class="metrics">{cards}</section>'
            f'<section class="cols"><div><h2>FT nearest tokens, best restart</h2><p class="note">tokens nearest to '
            f'the best restart\'s FT vector x, by cosine: one optimum among several</p>'
            f'<table class="toks near">{rows_near()}</table></div>'
            f'<div><h2>Best real tokens</h2><p class="note">exhaustive vocabulary scan: activation of each token '
            f'in the template, beside the FT vector</p><table class="toks best">{rows_best()}</table></div></section>'
            f'<p class="note">Highlighted tokens are in both top-10 lists. A token links to the other neurons it '
            f'appears for.</p>{_writes_section(row)}'
            f'{restarts_html}'
            f'{phrases_section(row, act, best_act, words)}'
            f'<section><h2>Optimization curve</h2>{svg}<p class="note">{esc(curve_note)}</p></section>'
            f'<footer>{esc(row["steps"])} steps &times; {esc(row["restarts"])} restarts, seed {esc(row["seed"])}, '
            f'{fmt(row["seconds"], ".3g")} s</footer></main>')
    return document(f"{name} \u00b7 neurotext atlas", body, "../assets/atlas.css", CSP_NEURON, kind="neuron")


def _stability_html(row: dict) -> tuple[str, str]:
    """The neuron page's lead section (consensus tokens and stability figures, with a visible mark when the
    restarts disagree) and the section listing every restart's nearest tokens."""
    st, detail = row.get("stability"), row.get("restarts_detail") or []
    if st is None:
        return ('<section class="stability"><h2>Consensus of restarts</h2><p class="note warn">Not available: this '
                'store was written before per-restart results were kept (recompute with neurotext sweep ... '
                '--force). The tokens below are one optimum\'s.</p></section>', "")
    repro = row.get("reproducible")
    cons = st.get("consensus") or []
    if st["restarts"] < 2:
        verdict = ('<p class="flag unstable">Only one restart reached the best activation: nothing to compare, so '
                   'nothing here is known to be reproducible.</p>')
    elif repro is False or not cons:
        verdict = ('<p class="flag unstable">The restarts disagree: their nearest tokens overlap no more than '
                   'optima of unrelated neurons do (or no token is shared by half of them). Read the token lists '
                   'below as samples, not as the neuron\'s representation.</p>')
    else:
        verdict = ('<p class="flag stable">Reproducible: the restarts agree on the consensus tokens above chance '
                   '(optima of different neurons of this layer).</p>')
    chips = "".join(
        f'<tr><td>{token_html(c["token"], search_href(c["token"]))}</td><td class="barcell">'
        f'{_bar(c["support"], "cos")}</td><td class="num">{fmt(c["support"], ".0%")}</td></tr>' for c in cons)
    figures = [
        ("restarts counted", f'{st["restarts"]} of {row.get("restarts", "?")}',
         "restarts within the tolerance of the best activation"),
        ("Jaccard@10", fmt(st.get("jaccard_at_10"), ".3f"), "mean pairwise overlap of their 10 nearest tokens"),
        ("cosine", fmt(st.get("cosine"), ".3f"), "mean pairwise cosine of their FT vectors"),
        ("activation spread", fmt(st.get("activation_spread"), ".3f"), "worst / best restart activation"),
    ]
    cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div>'
                    f'<div class="hint">{esc(h)}</div></div>' for k, v, h in figures)
    cent = row.get("centroid")
    cent_html = ""
    if cent and cent.get("restarts", 0) >= 2:
        act = row.get("activation")
        share = f" ({fmt(cent['activation'] / act, '.0%')} of the best restart's)" if act and act > 0 else ""
        pairs = list(zip(cent["nearest_tokens"] or [], cent["nearest_cosines"] or []))
        cent_rows = "".join(
            f'<tr><td class="rank">{i}</td><td>{token_html(t, search_href(t))}</td><td class="num">{fmt(c, ".3f")}'
            f'</td></tr>' for i, (t, c) in enumerate(pairs, 1))
        cent_html = (f'<div><h3>Centroid of the {esc(cent["restarts"])} counted restarts</h3><p class="note">nearest '
                     f'tokens of the normalized mean of their optima: the read-out measured to be most reproducible '
                     f'across seeds; its activation is {fmt(cent["activation"])}{esc(share)}</p>'
                     f'<table class="toks centroid">{cent_rows}</table></div>')
    lead = (f'<section class="stability"><h2>Consensus of restarts</h2>{verdict}'
            f'<div class="cols"><div><p class="note">tokens in the top-10 of at least half of the counted restarts, '
            f'with the share that holds them</p>'
            + (f'<table class="toks consensus">{chips}</table>' if chips else '<p class="muted">no consensus token</p>')
            + f'</div><div class="stabcards">{cards}</div></div>'
            + (f'<div class="cols">{cent_html}</div>' if cent_html else "") + '</section>')
    rows = "".join(
        f'<tr><td class="rank">#{esc(d["restart"])}</td><td class="num">{fmt(d["activation"])}</td><td>'
        + " ".join(token_html(t, search_href(t)) for t in d["nearest_tokens"] or []) + "</td></tr>"
        for d in detail)
    every = (f'<section><h2>Every restart</h2><p class="note">each restart\'s optimum, best first: its activation and '
             f'its nearest tokens by cosine</p><table class="toks restarts">{rows}</table></section>') if rows else ""
    return lead, every
def phrases_section(row: dict, ft_act, best_act, words: dict | None = None) -> str:
    """The best real phrase of each length with its activation, beside the FT vector's and the best single
    token's (empty when the sweep stored no phrases). Tokens are chips, escaped like every token.
    ``words``: :func:`unit_words` of the store's architecture."""
    words = words or unit_words(None)
    first = esc(words["first"])
    lengths = row.get("phrase_lengths") or []
    if not lengths:
        return ""
    acts = row["phrase_activations"]
    tok_act = row.get("phrase_token_activation")
    scale = max([v for v in (ft_act, best_act, tok_act, *acts) if v is not None and math.isfinite(v)] + [1e-12])
    out = [f'<tr class="ft"><td class="rank"></td><td><span class="tok ftvec">FT vector x</span></td>'
           f'<td class="barcell">{_bar((ft_act or 0) / scale, "ftact")}</td><td class="num">{fmt(ft_act)}</td>'
           f'<td></td></tr>',
           f'<tr class="besttok"><td class="rank"></td><td><span class="muted">best single token</span></td>'
           f'<td class="barcell">{_bar((tok_act or 0) / scale, "act")}</td><td class="num">{fmt(tok_act)}</td>'
           f'<td></td></tr>']
    for n, toks, a, pos in zip(lengths, row["phrase_tokens"], acts, row["phrase_positions"]):
        chips = " ".join(token_html(t, search_href(t)) for t in toks)
        out.append(f'<tr class="phrase"><td class="rank">{esc(n)}</td><td class="phrase">{chips}</td>'
                   f'<td class="barcell">{_bar(a / scale, "act")}</td><td class="num">{fmt(a)}</td>'
                   f'<td class="num" title="position of the best token in the input ({first} = 0)">'
                   f'@{esc(pos)}</td></tr>')
    note = (f"The best real token sequence of each length n (left column) in {words['template']}, by "
            "gradient-guided coordinate search over the vocabulary (n = 1: the exhaustive scan); its activation is "
            f"the neuron's value at the best of the positions t1..tn (@: that position, {words['first']} = 0)"
            + (words["after"] if row.get("site") == "ffn" else "") + ". Special tokens are excluded unless the "
            "sweep included them.")
    return (f'<section id="phrases"><h2>Best real phrases</h2><table class="toks phrases">{"".join(out)}</table>'
            f'<p class="note">{esc(note)}</p></section>')
