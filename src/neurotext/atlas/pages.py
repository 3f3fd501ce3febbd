"""HTML of the atlas: the index page and one page per neuron or dictionary feature.

A neuron page is the neuron's card (:mod:`neurotext.display.card`, the same card a result shows in a notebook) and,
when the store holds corpus examples of it, its real text, with the atlas's navigation around them; a store of
corpus examples alone gives pages of real text and an index without the Q1 sections. A dictionary feature
(``L3.ffn.f12``) has the same page, plus its neuron support linked to the pages of the neurons that carry it, and
the index lists the dictionaries the store records and lets the table show features or neurons. Token strings are
untrusted (vocabularies hold ``<``, ``>``, ``&`` and quotes, and a user's model can hold anything), so every
value goes through :func:`esc` in HTML and :func:`script_json` in JSON meant for a page. Pages carry a
Content-Security-Policy that allows only the site's own scripts (none at all on a neuron page), as a second
line of defence.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from ..analysis.scores import CHANCE, READOUTS, SCORES
from ..display.card import Chips, esc, examples_section, fmt, neuron_card, neuron_header, support_section
from ..model.names import is_feature_site
from ..model.tokens import CONVENTION, DECODED, PLAIN
from . import probes, realtext
from .readouts import FT_READOUTS, SCORE_LABELS, score_definitions, scores_section

#: Index page: only the site's own script files; neuron pages: no script at all.
CSP_INDEX = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
             "base-uri 'none'; form-action 'none'")
CSP_NEURON = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; " \
             "form-action 'none'"
#: Stylesheets of every page, relative to the site's root: the card's (scoped under the body's class ``nt``),
#: then the site's own.
STYLESHEETS = ("assets/card.css", "assets/atlas.css")


#: The index's note on the real-text search, and on an atlas of a store without a sweep.
CORPUS_SEARCH_NOTE = ("Real text: \u201cmax tokens in real text\u201d finds the neurons whose top contexts in the "
                      "corpus peak at the token searched (the token at each top context's max, any rank); with "
                      "partial match, at a token that contains it. Hover a row's tokens for its top context.")
NO_SWEEP_NOTE = ("This store holds corpus examples only: the Q1 sections (feature textualization, stability, "
                 "word-like neurons) need a sweep of the same model in the same folder (neurotext sweep NEURONS "
                 "--out DIR), after which neurotext report shows both.")
PROBE_ONLY_NOTE = ("This folder holds probe results only: neuron pages and the Q1 sections need a sweep (neurotext "
                   "sweep NEURONS --out DIR) or corpus examples (neurotext examples NEURONS --out DIR) of the same "
                   "model in the same folder, after which neurotext report shows them beside the Q2 page.")


def script_json(obj) -> str:
    """JSON that is safe inside a ``<script>`` element or a JS file: ``<``, ``>``, ``&``, U+2028 and
    U+2029 are written as ``\\uXXXX`` escapes (they can only occur inside strings, where that is valid)."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch in ("<", ">", "&", "\u2028", "\u2029"):
        s = s.replace(ch, f"\\u{ord(ch):04x}")
    return s


def document(title: str, body: str, css: tuple[str, ...], csp: str, scripts: tuple[str, ...] = (),
             kind: str = "") -> str:
    """A whole HTML page; ``css`` and ``scripts`` are relative URLs of files in the site; ``kind`` is the
    body's class beside ``nt`` (the card's scope)."""
    tags = "".join(f'<script src="{esc(s)}" defer></script>' for s in scripts)
    links = "".join(f'<link rel="stylesheet" href="{esc(c)}">' for c in css)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">'
            f'<title>{esc(title)}</title>{links}{tags}</head>\n'
            f'<body class="nt {esc(kind)}">{body}</body></html>\n')


def search_href(token: str, prefix: str = "../") -> str:
    """Link to the index's token search."""
    return f"{prefix}index.html#q={quote(token, safe='')}"


def _kv_table(rows: list[tuple[str, object]]) -> str:
    return "<table class=\"kv\">" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) \
        + "</table>"


#: The index's table of median scores is open when it has at most this many rows (else a click opens it).
OPEN_ROWS = 24


# --------------------------------------------------------------------------- index
def _stats_table(head: list[str], rows: list[list], cls: str = "stats") -> str:
    return (f'<table class="{cls}"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead><tbody>'
            + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")


def _med(q: dict | None, spec: str = ".3f") -> str:
    return fmt((q or {}).get("median"), spec)


def real_text_section(scores: dict) -> str:
    """The index's real-text arm: does a reading of a neuron predict real text? Per layer the figures and the
    median of every read-out's scores beside its chance level, the token identity share beside the permuted
    baseline, and optimization over the corpus maximum.

    Args:
        scores: ``{"doc"}`` (:meth:`neurotext.analysis.scores.CorpusArm.to_dict`, None when the scores could not be
            computed), ``"plots"`` (relative URL of each figure by key), ``"note"`` (why the scores are missing or
            partial, or None) and ``"seed"`` (of the chance pairs).
    """
    doc, note = scores.get("doc"), scores.get("note")
    head = '<section id="real-text"><h2>Real text &middot; Which reading predicts real text?</h2>'
    if doc is None:
        return (f'{head}<p class="note warn">The read-outs are not scored on real text: {esc(note)}</p></section>')
    c, split, miss = doc["corpus"], doc["split"], doc["missing"]
    lead = (f'<p class="lead">Every reading of a neuron (the FT vector and its nearest tokens, the consensus and '
            f'centroid of the restarts, the vocabulary scan\'s best tokens, the best real phrase, and the lookup table '
            f'fitted on real text as the reference) is used as a prediction of the neuron\'s activation on held-out '
            f'text of the corpus {esc(c.get("name"))} (test part {esc(split.get("test_share"))}, split seed '
            f'{esc(split.get("seed"))}), beside its chance level: the same read-out of another neuron of the layer '
            f'(chance seed {esc(scores.get("seed"))}). Each neuron\'s page lists its own.</p>'
            f'<p class="note">Evaluation set: {esc(doc["evaluation"])}.</p>')
    notes = []
    if note:
        notes.append(f'<p class="note warn">{esc(note)}</p>')
    if any(miss.values()):
        notes.append(f'<p class="note">Not scored: {esc(miss["sweep_only"])} neurons without corpus examples, '
                     f'{esc(miss["examples_only"])} without an FT result; null scores: {esc(miss["no_test_context"])} '
                     f'neurons without a test context.</p>')
    n_sites = len({(r["site"]) for r in doc["corpus_scores"]}) or 1
    figs = scores.get("plots") or {}
    alts = {stat: f"median {stat.replace('_', ' ')} of every read-out per layer, beside chance" for stat in SCORES}
    alts |= {"token_identity": "omega squared by token id per layer, beside the permuted baseline",
             "optimization": "activation over the corpus maximum per layer"}
    imgs = "".join(f'<img class="plot" src="{esc(figs[k])}" alt="{esc(alts[k])}" width="700" '
                   f'height="{340 * n_sites}">' for k in alts if k in figs)
    rows = {}
    for r in doc["corpus_scores"]:
        rows[(r["layer"], r["site"], r["readout"])] = r
    score_rows = []
    for layer, site in sorted({(r["layer"], r["site"]) for r in doc["corpus_scores"]}):
        for name in READOUTS:
            r, ch = rows.get((layer, site, name)), rows.get((layer, site, name + CHANCE))
            if r is None:
                continue
            score_rows.append([f"L{layer}", site, name, r["n"]] + [
                x for stat in SCORES for x in (_med(r[stat]), _med(ch[stat]),
                                               fmt(r["above_chance"][stat], ".0%"))])
    defs = score_definitions()
    score_head = ["layer", "site", "read-out", "neurons"] + [
        h for stat in SCORES for h in (f"median {SCORE_LABELS.get(stat, stat)}", "chance", "above chance")]
    ti_rows = [[f"L{t['layer']}", t["site"], t["n"], _med(t["omega_squared"]), _med(t["omega_squared_permuted"]),
                fmt(t["above_half"], ".0%")] for t in doc["token_identity"]]
    lengths = sorted({n for o in doc["optimization"] for n in o["phrase_over_corpus_max"]}, key=int)
    opt_rows = [[f"L{o['layer']}", o["site"], o["n"], _med(o["ft_over_corpus_max"], ".3g"),
                 _med(o["scan_best_over_corpus_max"], ".3g")]
                + [_med(o["phrase_over_corpus_max"].get(n), ".3g") for n in lengths] for o in doc["optimization"]]
    return (f'{head}{lead}{"".join(notes)}<div class="plots">{imgs}</div>'
            f'<details class="scores"{" open" if len(score_rows) <= OPEN_ROWS else ""}><summary><h3>Median scores '
            f'beside chance</h3> <span class="muted">per layer and read-out ({len(score_rows)} rows)</span></summary>'
            + _stats_table(score_head, score_rows, "stats scores") + '</details>'
            + f'<p class="note">{esc(defs)}. '
              f'Medians over the layer\'s neurons; chance: the median of the same read-out of each neuron\'s chance '
              f'partner; above chance: the share of neurons whose read-out beats its own chance level.</p>'
            + '<h3>Does the token explain the activation?</h3>'
            + _stats_table(["layer", "site", "neurons", "median ω² by token id", "labels permuted (chance)",
                            "ω² > 0.5"], ti_rows)
            + '<p class="note">Omega squared of the activation over every text position by token id: the share of its '
              'variance the token identity explains (1 = a word neuron), beside the same with the token labels '
              'permuted.</p><h3>How far does optimization exceed real text?</h3>'
            + _stats_table(["layer", "site", "neurons", "FT / corpus max", "best real token / corpus max"]
                           + [f"best phrase of {n} / corpus max" for n in lengths], opt_rows)
            + '<p class="note">Medians of each activation over the neuron\'s highest activation in the corpus (1 = the '
              'corpus max).</p></section>')


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


def dictionaries_table(recorded: list[dict]) -> str:
    """The index's list of the dictionaries whose features the atlas shows (site, features, input width,
    architecture, k, hook, path, weight fingerprint)."""
    head = ["site", "features", "d_in", "architecture", "k", "hook", "path", "fingerprint"]
    rows = "".join("<tr>" + "".join(f"<td>{esc('' if d.get(k) is None else d.get(k))}</td>" for k in (
        "site", "width", "d_in", "architecture", "k", "hook", "path", "fingerprint")) + "</tr>" for d in recorded)
    return (f'<section id="dictionaries"><h2>Dictionaries</h2><p class="lead">The sparse dictionaries (SAELens '
            f'format) whose features are units here: a feature <code>L3.ffn.f12</code> is feature 12 of the '
            f'dictionary on <code>L3.ffn</code>; its activation is the dictionary\'s encoding of the site\'s values, '
            f'its pre-activation the encoder\'s (what feature textualization maximizes). Each feature\'s page adds '
            f'what its decoder direction writes and its neuron support.</p>'
            f'<table class="stats dicts"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')


def index_page(manifest: dict | None, stats: list[dict], n_neurons: int, q1_plot: str | None, q2: dict | None,
               word_like_rule: str, stability: dict | None = None, token_kind: str = PLAIN,
               examples: dict | None = None, scores: dict | None = None, n_features: int = 0,
               dictionaries: list[dict] | None = None, probe: dict | None = None) -> str:
    """The atlas front page; the neuron table itself is filled in by ``assets/atlas.js`` from
    ``data/neurons.js`` (loaded asynchronously, rendered a page at a time).

    Args:
        manifest: the sweep's ``manifest.json``; None for a store of corpus examples only (no Q1 sections).
        stats: per (layer, site) Q1 summaries (see :func:`neurotext.atlas.report.layer_stats`).
        n_neurons: rows in the store.
        q1_plot, q2: relative URL of the Q1 figure; ``{"plot", "model", "site", "objective", "words",
            "skipped", "source"}`` for Q2, or None when absent.
        word_like_rule: how a word-like neuron is defined (shown under the table).
        stability: ``{"plot", "rule", "groups"}`` of the stability arm, None for a store without it.
        token_kind: the store's vocabulary kind; for one whose tokens are shown decoded, the convention is
            named under the table.
        examples: the manifest of the store's corpus examples (``DIR/examples``), None without them.
        scores: the read-out scores on real text (see :func:`real_text_section`), None for a store without both a
            sweep and corpus examples (no real-text section, no score columns).
        n_features: how many of the ``n_neurons`` units are dictionary features (the table then gets a site
            column and a neurons/features filter).
        dictionaries: the dictionaries the store records (``manifest["dictionaries"]`` entries), listed in their
            own section.
        probe: Q2 on real text (:func:`neurotext.atlas.probes.index_info`: the summary and the Q2 page's URL), or
            None. Without a sweep and corpus examples the index is this section alone (no neuron table).
    """
    sweep = manifest is not None
    has_units = sweep or examples is not None  # else an atlas of probe results alone
    model = (manifest if sweep else examples or {}).get("model", {})
    cfg = manifest.get("config", {}) if sweep else {}
    name = model.get("name") or (probe or {}).get("model") or "?"
    sizes = ", ".join(f"{k} {v}" for k, v in (model.get("sizes") or {}).items())
    model_rows = [("name", name), ("type", model.get("model_type", "?")), ("source", model.get("source", "?")),
                  ("weights fingerprint", model.get("fingerprint", "?")), ("layers", model.get("n_layers", "?")),
                  ("units per layer", sizes), ("vocabulary", model.get("vocab_size", "?")),
                  ("embedding size", model.get("d_emb", "?"))]
    if sweep:
        n_swept = sum(s["n"] for s in stats)
        sweep_rows = [("neurons" if not n_features else "units",
                       f"{n_swept} of {manifest.get('neurons', {}).get('count', '?')} planned")]
        sweep_rows += [(k, v) for k, v in sorted(cfg.items())]
        sweep_rows += [("created", manifest.get("created", "?")),
                       ("neurotext", manifest.get("neurotext_version", "?"))]

    head = ["layer", "site", "neurons", "median nearest cosine", "median retention", "mean overlap@10",
            "median FT / best-token activation", "word-like"]
    body_rows = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in (
            f"L{s['layer']}", s["site"], s["n"], fmt(s["nearest_cosine"], ".3f"), fmt(s["retention"], ".3f"),
            fmt(s["overlap_at_10"], ".3f"), fmt(s["act_ratio"], ".3g"),
            f"{fmt(s['word_like'], '.1%')} ({s['word_like_n']})")) + "</tr>" for s in stats)
    q1 = "" if not sweep else ('<section id="q1"><h2>Q1 &middot; Do single neurons encode words?</h2>'
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
                   + _kv_table([(k, v) for k, v in info if v is not None])
                   + (f'<p class="note">Each word\'s FT recovery beside the probe on real text: '
                      f'<a href="{esc(probe["href"])}">the Q2 page</a>.</p>' if probe else "") + "</section>")
    heading = "Neurons and features" if n_features else "Neurons"
    table = "" if not has_units else (f'<section id="neurons"><h2>{heading}</h2>'
             '<div class="controls">'
             '<input id="q" type="search" autocomplete="off" spellcheck="false" '
             + ('placeholder="token (e.g. rain) or unit (e.g. L3.ffn.42, L3.ffn.f12)" aria-label="search units">'
                if n_features else
                'placeholder="token (e.g. rain) or neuron (e.g. L3.ffn.42)" aria-label="search neurons">')
             + '<select id="where" aria-label="which tokens to search">'
             + ('<option value="both">consensus, nearest &amp; best tokens</option>'
                '<option value="consensus">consensus of restarts</option>'
                '<option value="nearest">FT nearest tokens (best restart)</option>'
                '<option value="best">best real tokens</option>' if sweep else "")
             + ('<option value="phrase">best real phrase</option>' if sweep and "phrases" in manifest else "")
             + ('<option value="corpus">max tokens in real text (top contexts)</option>' if examples else "")
             + '</select>'
             '<label><input id="partial" type="checkbox"> partial match</label>'
             + ('<select id="units" aria-label="which units to list"><option value="all">neurons &amp; features'
                '</option><option value="neurons">neurons only</option><option value="features">dictionary '
                'features only</option></select>' if n_features else "")
             + '<span id="count" class="muted" aria-live="polite">loading neurons&hellip;</span></div>'
             '<div class="tablewrap"><table id="table" class="neurons"><thead><tr></tr></thead><tbody></tbody>'
             '</table></div>'
             '<div class="pager"><button id="prev" type="button">&larr; previous</button>'
             '<span id="page" class="muted"></span><button id="next" type="button">next &rarr;</button>'
             '<select id="per" aria-label="rows per page"><option>50</option><option selected>100</option>'
             '<option>500</option></select></div>'
             + (f'<p class="note">{esc(CORPUS_SEARCH_NOTE)}</p>' if examples else "")
             + (f'<p class="note">The {esc(CONVENTION)}.</p>' if token_kind in DECODED else "")
             + '<noscript><p>The neuron table needs JavaScript; every neuron also has a page at '
             'neurons/NAME.html.</p></noscript></section>')
    scored = scores is not None and scores.get("doc") is not None
    meta = {"n": n_neurons, "model": name, "phrases": sweep and "phrases" in manifest, "sweep": sweep,
            "examples": examples is not None, "scores": scored, "ft_readouts": list(FT_READOUTS),
            "features": n_features > 0}
    q2_link = ('<a href="#q2">Q2</a>' if q2 else "") + ('<a href="#q2-text">Q2 on real text</a>' if probe else "")
    corpus_name = ((examples or {}).get("corpus") or {}).get("name", "?")
    n_swept_features = sum(s["n"] for s in stats if is_feature_site(s["site"]))
    if sweep:
        units = (f"{n_swept} units ({n_swept - n_swept_features} neurons, {n_swept_features} dictionary features)"
                 if n_features else f"{n_swept} neurons")
        lead = (f'Feature textualization of {units}: for each, the vector in word-embedding space that '
                f'maximizes it, the real tokens nearest to that vector, and the best real tokens'
                + (f'; and real text: each neuron\'s max-activating contexts in the corpus {esc(corpus_name)}, '
                   f'samples below the top, random contexts and statistics ({n_neurons} '
                   f'{"units" if n_features else "neurons"} in all).' if examples else "."))
    elif examples is not None:
        units = (f"{n_neurons} units ({n_neurons - n_features} neurons, {n_features} dictionary features)"
                 if n_features else f"{n_neurons} neurons")
        lead = (f'Real text of {units}: each neuron\'s max-activating contexts in the corpus '
                f'{esc(corpus_name)}, samples from ranges below the top, random contexts and statistics.</p>'
                f'<p class="note">{esc(NO_SWEEP_NOTE)}')
    else:
        model_rows = [("name", name)]
        p = probe or {}
        lead = (f'Q2 on real text: how many units a linear probe needs to find each of {esc(p.get("words"))} '
                f'words in the corpus {esc(p.get("corpus") or "?")}.</p>'
                f'<p class="note">{esc(PROBE_ONLY_NOTE)}')
    config = [("Model", model_rows)] + ([("Sweep", sweep_rows)] if sweep else []) \
        + ([("Corpus", realtext.corpus_rows(examples))] if examples else []) \
        + ([("Probe", [("corpus", probe.get("corpus") or "?"), ("words", probe["words"]),
                       ("skipped", probe["skipped"]), ("from", probe["source"])])] if probe and not has_units else [])
    toc = (f'<a href="#config">model{" &amp; sweep" if sweep else ""}{" &amp; corpus" if examples else ""}</a>'
           + ('<a href="#dictionaries">dictionaries</a>' if dictionaries else "")
           + ('<a href="#q1">Q1</a>' if sweep else "") + f'{q2_link}'
           + ('<a href="#real-text">real text</a>' if scores is not None else "")
           + ('<a href="#neurons">neurons</a>' if has_units else ""))
    body = (f'<header><div class="brand">neurotext atlas</div><h1>{esc(name)}</h1>'
            f'<p class="lead">{lead}</p><nav class="toc">{toc}</nav></header>'
            f'<main><section id="config" class="cols">'
            + "".join(f'<div><h2>{esc(t)}</h2>{_kv_table(rows)}</div>' for t, rows in config)
            + f'</section>{dictionaries_table(dictionaries) if dictionaries else ""}{q1}{q2_html}'
            f'{probes.index_section(probe) if probe else ""}'
            f'{real_text_section(scores) if scores is not None else ""}{table}</main>'
            f'<script type="application/json" id="atlas-meta">{script_json(meta)}</script>')
    return document(f"neurotext atlas: {name}", body, STYLESHEETS, CSP_INDEX, ("assets/atlas.js",) if has_units else (),
                    "index")


# --------------------------------------------------------------------------- Q2 page
def q2_page(records: list[dict], source, **kw) -> str:
    """The Q2 page on real text (``q2.html`` at the site's root; no script): :func:`neurotext.atlas.probes.page_body`
    with the site's stylesheets."""
    return document("Q2 on real text \u00b7 neurotext atlas", probes.page_body(records, source, **kw), STYLESHEETS,
                    CSP_NEURON, kind="q2")


# --------------------------------------------------------------------------- neuron page
def _neighbour(name: str | None, arrow: str, before: bool) -> str:
    if name is None:
        return '<span class="muted">&mdash;</span>'
    label = f"{arrow} {esc(name)}" if before else f"{esc(name)} {arrow}"
    return f'<a href="{esc(name)}.html">{label}</a>'


def neuron_page(row: dict, model_name: str, prev_name: str | None, next_name: str | None,
                model_type: str | None = None, token_kind: str = PLAIN, examples=None,
                corpus: bool = False, sweep: bool = True, scores: dict | None = None,
                readout_tokens: dict | None = None, unit_href=None) -> str:
    """One neuron: its card (:func:`neurotext.display.card.neuron_card`) with links to neighbouring units and, from
    every token, to the index's search for it; its real text (:func:`neurotext.display.card.examples_section`) when
    the store holds corpus examples of it, and before it each read-out's scores on held-out text beside chance
    (:func:`neurotext.atlas.readouts.scores_section`) when the store holds a sweep too.

    Args:
        row: the store row (see :func:`neurotext.store.schema`; ``vector`` is not needed), or for a neuron
            that only has corpus examples ``{"neuron", "layer", "site", "unit"}``: its page is the real text.
        model_name: shown under the title.
        prev_name, next_name: canonical names of unit-1 and unit+1 when they are in the store.
        model_type: the store's ``config.model_type``: words the ffn values for its architecture.
        token_kind: the store's vocabulary kind: how tokens are shown (:mod:`neurotext.model.tokens`).
        examples: the neuron's :class:`neurotext.examples.NeuronExamples`, or None.
        corpus: whether the store holds corpus examples (a neuron without them then says so).
        sweep: whether the store holds a sweep (a neuron that is not in it then says so).
        scores: the neuron's record of the read-out scores (:func:`neurotext.analysis.scores.corpus_arm`), or None.
        readout_tokens: the tokens of its token-set read-outs (:func:`neurotext.analysis.scores.readout_tokens`).
        unit_href: for a dictionary feature, where a neuron of its support links (a canonical name -> the URL of
            its page, or None when the atlas has none).
    """
    swept = "activation" in row
    chips = Chips(token_kind, href=search_href)
    real = examples_section(examples, chips, row.get("activation") if swept else None) if examples is not None \
        else ('<section class="realtext" id="real-text"><h2>Real text</h2><p class="muted">The corpus pass of this '
              'store did not include this neuron (neurotext examples NEURONS --out DIR).</p></section>'
              if corpus else "")
    if scores is not None:
        real = scores_section(scores, readout_tokens, chips, is_feature_site(row["site"])) + real
    jump = ('<span class="sep"></span><a href="#scores">scores &darr;</a>' if scores is not None else "") \
        + ('<span class="sep"></span><a href="#real-text">real text &darr;</a>' if swept and examples is not None
           else "")
    nav = (f'<nav class="crumbs"><a href="../index.html">&larr; atlas index</a><span class="sep"></span>'
           f'{_neighbour(prev_name, "&lsaquo;", True)}<span class="sep"></span>'
           f'{_neighbour(next_name, "&rsaquo;", False)}{jump}</nav>')
    if swept:
        main = neuron_card(row, chips, model_type, real_text=real, unit_href=unit_href)
    else:
        noun = "feature" if is_feature_site(row["site"]) else "neuron"
        main = (f'<p class="note">The sweep in this store does not include this {noun} (neurotext sweep '
                f'{esc(row["neuron"])} --out DIR adds it): its real text only.</p>' if sweep else "") \
            + support_section(row, unit_href) + real
    body = f'{nav}{neuron_header(row, f"neurotext atlas · {model_name}")}<main>{main}</main>'
    return document(f"{row['neuron']} \u00b7 neurotext atlas", body, tuple(f"../{c}" for c in STYLESHEETS),
                    CSP_NEURON, kind="neuron")
