"""The HTML card of one neuron: what the atlas's neuron page shows, and what a result shows in a notebook.

One renderer for both: :func:`neuron_header` and :func:`neuron_card` turn a store row (the columns of
:func:`neurotext.store.schema`; a result becomes one with ``NeuronResult.to_row``) into the page's header and
its body: the consensus of restarts and their centroid, the metrics, the FT nearest tokens beside the best
real tokens, what the neuron writes, every restart, the best real phrases and the optimization curve. The
atlas wraps it in a page (``neurotext.atlas.pages``), a notebook in a ``<div>`` with the card's stylesheet
(``neurotext.display.notebook``). Its look is ``atlas/assets/card.css``, every rule scoped under the class ``nt``.

:func:`examples_section` renders a neuron's real text (its corpus examples: the top contexts, range samples
and random contexts with every token's background coloured by its activation on one scale per neuron,
:func:`colour_scale` and :func:`activation_colour`; statistics; a histogram), the same on an atlas page and
in a notebook.

Token strings and corpus texts are untrusted (vocabularies hold ``<``, ``>``, ``&`` and quotes, a user's model
can hold anything, and a corpus any markup): every value goes through :func:`esc`, and a card holds no script.
Tokens are shown by the convention of :mod:`neurotext.model.tokens` (``Ġfurniture`` as ``␣furniture``).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from ..model.names import base_site, is_feature_site, unit_name
from ..model.tokens import CONVENTION, DECODED, PLAIN, display_token

#: Short description of each site for page subtitles (DESIGN.md section 2); a feature site (``ffn.f``: the
#: features of the dictionary on ``ffn``) has its own.
SITE_LABELS = {"ffn": "FFN intermediate neuron", "out": "output hidden-state dimension",
               "ffn.f": "dictionary feature on the FFN intermediate neurons",
               "out.f": "dictionary feature on the output hidden state"}
#: The card's stylesheet (in the package), every rule scoped under ``.nt``.
CSS_FILE = ("atlas", "assets", "card.css")


def esc(value) -> str:
    """Text for HTML element content or a quoted attribute value."""
    return html.escape(str(value), quote=True)


def fmt(v, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


@lru_cache(maxsize=1)
def card_css() -> str:
    """The card's stylesheet (``atlas/assets/card.css``)."""
    return resources.files("neurotext").joinpath(*CSS_FILE).read_text("utf-8")


def token_html(token: str, href: str | None = None, cls: str = "tok", raw: str | None = None) -> str:
    """One token as a chip showing ``token``; an empty token is shown as the empty-set sign. ``raw``: the
    vocabulary string, named in the chip's title when it differs from what is shown."""
    text, extra = (esc(token), "") if token != "" else ("\u2205", " empty")
    tips = (["neurons with this token"] if href is not None else []) + \
        ([f"vocabulary string {raw!r}"] if raw is not None and raw != token else [])
    title = f' title="{esc("; ".join(tips))}"' if tips else ""
    if href is None:
        return f'<span class="{cls}{extra}"{title}>{text}</span>'
    return f'<a class="{cls}{extra}" href="{esc(href)}"{title}>{text}</a>'


@dataclass(frozen=True)
class Chips:
    """How a card shows tokens: the vocabulary kind (:data:`neurotext.model.tokens.KINDS`) and where a token
    links, a function of the shown text (None: chips without links, as in a notebook)."""

    kind: str = PLAIN
    href: Callable[[str], str] | None = None

    def __call__(self, token: str) -> str:
        shown = display_token(token, self.kind)
        return token_html(shown, self.href(shown) if self.href else None, raw=token)


def bar(fraction: float, cls: str) -> str:
    w = 0.0 if not math.isfinite(fraction) else max(0.0, min(1.0, fraction)) * 100
    return f'<span class="bar {cls}"><span style="width:{w:.1f}%"></span></span>'


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


def site_words(site: str | None, words: dict | None = None) -> dict:
    """How a card words the values of a unit at ``site``: what its activation and pre-activation are, what the
    optimization curve shows, and whether the curve's objective is the activation itself (then the best real
    token's activation is drawn on it). ``words``: :func:`unit_words` of the architecture (for ffn units).

    A dictionary feature (site ``ffn.f``) is valued by its dictionary: its activation is the dictionary's encoding
    of the site's values (TopK, JumpReLU: exactly 0 where the feature is off), its pre-activation the encoder's,
    which feature textualization maximizes."""
    words = words or unit_words(None)
    if site is not None and is_feature_site(site):
        return {"noun": "feature",
                "activation": "the feature's value at x's position: the dictionary's encoding of the site's values "
                              "(its activation function, e.g. TopK or JumpReLU, applied to the encoder's "
                              "pre-activation; exactly 0 where the feature is off)",
                "pre_activation": "the encoder's pre-activation W_enc (a - b_dec) + b_enc (the optimized quantity)",
                "objective": "encoder pre-activation", "after": " (the dictionary's encoding)", "reference": False}
    if site == "ffn":
        return {"noun": "neuron", "activation": "the neuron's value at x's position" + words["activation"],
                "pre_activation": words["pre_activation"], "objective": words["objective"],
                "after": words["after"], "reference": False}
    return {"noun": "neuron", "activation": "the neuron's value at x's position",
            "pre_activation": "equal to the activation for an output dimension", "objective": "activation",
            "after": "", "reference": site == "out"}


# --------------------------------------------------------------------------- one neuron
def neuron_header(row: dict, brand: str) -> str:
    """The card's header: ``brand`` (e.g. ``neurotext atlas · MODEL``), the unit's name, its layer, site and
    unit, or for a dictionary feature its index (a direction's row has no unit)."""
    site, unit = row.get("site"), row.get("unit")
    what = [f"layer {esc(row.get('layer'))}", esc(SITE_LABELS.get(site, site))] if unit is not None else \
        [f"layer {esc(row.get('layer'))}", f"a direction over the {esc(site)} site"]
    which = "feature" if site is not None and is_feature_site(site) else "unit"
    where = " &middot; ".join(what + ([f"{which} {esc(unit)}"] if unit is not None else []))
    return (f'<header><div class="brand">{esc(brand)}</div><h1>{esc(row["neuron"])}</h1>'
            f'<p class="lead">{where}</p></header>')


def neuron_card(row: dict, chips: Chips | None = None, model_type: str | None = None, real_text: str = "",
                unit_href: Callable[[str], str | None] | None = None) -> str:
    """One neuron's card: tokens with bars, metrics, stability, what it writes, for a dictionary feature its
    neuron support (:func:`support_section`), phrases, real text (when given), the optimization curve.

    Args:
        row: a store row (see :func:`neurotext.store.schema`; ``vector`` is not needed), or
            ``NeuronResult.to_row()``. ``reproducible`` (the atlas's comparison with the chance baseline)
            is optional.
        chips: how tokens are shown and linked (default: as in the vocabulary, no links).
        model_type: the model's ``config.model_type``: words the ffn values for its architecture.
        real_text: the neuron's :func:`examples_section`, placed after the phrases.
        unit_href: where a neuron named in the support section links (its canonical name -> URL, or None for
            plain text); default: no links.

    Returns:
        HTML without a script, every value escaped.
    """
    chips = chips or Chips()
    words = unit_words(model_type)
    site = row["site"]
    values = site_words(site, words)
    near = list(zip(row["nearest_tokens"] or [], row["nearest_ids"] or [], row["nearest_cosines"] or []))
    best = list(zip(row["best_tokens"] or [], row["best_ids"] or [], row["best_activations"] or []))
    shared = {i for _, i, _ in near[:10]} & {i for _, i, _ in best[:10]}
    act, best_act = row["activation"], row["best_activation"]
    ratio = act / best_act if act is not None and best_act and best_act > 0 else None

    def rows_near():
        out = []
        for rank, (tok, tid, cos) in enumerate(near, 1):
            mark = ' class="shared" title="also among the best real tokens"' if tid in shared else ""
            out.append(f'<tr{mark}><td class="rank">{rank}</td><td>{chips(tok)}</td>'
                       f'<td class="barcell">{bar(cos, "cos")}</td><td class="num">{fmt(cos, ".3f")}</td></tr>')
        return "".join(out)

    scale = max([v for v in (act, best_act) if v is not None and math.isfinite(v)] + [1e-12])

    def rows_best():
        out = [f'<tr class="ft"><td class="rank"></td><td><span class="tok ftvec">FT vector x</span></td>'
               f'<td class="barcell">{bar((act or 0) / scale, "ftact")}</td><td class="num">{fmt(act)}</td></tr>']
        for rank, (tok, tid, a) in enumerate(best, 1):
            mark = ' class="shared" title="also among the FT nearest tokens"' if tid in shared else ""
            out.append(f'<tr{mark}><td class="rank">{rank}</td><td>{chips(tok)}</td>'
                       f'<td class="barcell">{bar(a / scale, "act")}</td><td class="num">{fmt(a)}</td></tr>')
        return "".join(out)

    metrics = [
        ("activation", fmt(act), values["activation"]),
        ("pre-activation", fmt(row["pre_activation"]), values["pre_activation"]),
        ("best real token", fmt(best_act), "highest activation of any single vocabulary token"),
        ("FT / best token", fmt(ratio, ".3g"), "how far the FT vector exceeds every real token"),
        ("nearest-token activation", fmt(row["nearest_activation"]), "activation with x replaced by its nearest token"),
        ("retention", fmt(row["retention"], ".3f"), "nearest-token activation / activation"),
        ("overlap@10", fmt(row["overlap_at_10"], ".2f"), "share of the 10 nearest tokens among the 10 best tokens"),
        ("nearest cosine", fmt(row["nearest_cosine"], ".3f"), "cosine between x and its nearest token"),
    ]
    cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div>'
                    f'<div class="hint">{esc(h)}</div></div>' for k, v, h in metrics)
    reproducible_html, restarts_html = stability_html(row, chips)
    curve_label = values["objective"]
    svg = curve_svg(row.get("curve") or [], reference=best_act if values["reference"] else None, label=curve_label,
                    width=720, height=200, max_points=120)
    curve_note = (f"Objective of the best restart at every Adam step: the {curve_label} at x's position"
                  + (". The dashed line is the best real token's activation." if values["reference"] else
                     f"; the best real token reaches an activation{values['after']} of {fmt(best_act)}."))
    note = "Highlighted tokens are in both top-10 lists." \
        + (" A token links to the other units it appears for." if chips.href else "") \
        + (f" The {CONVENTION}." if chips.kind in DECODED else "")
    return (f'{reproducible_html}'
            f'<section class="metrics">{cards}</section>'
            f'<section class="cols"><div><h2>FT nearest tokens, best restart</h2><p class="note">tokens nearest to '
            f'the best restart\'s FT vector x, by cosine: one optimum among several</p>'
            f'<table class="toks near">{rows_near()}</table></div>'
            f'<div><h2>Best real tokens</h2><p class="note">exhaustive vocabulary scan: activation of each token '
            f'in the template, beside the FT vector</p><table class="toks best">{rows_best()}</table></div></section>'
            f'<p class="note">{esc(note)}</p>{writes_section(row, chips)}{support_section(row, unit_href)}'
            f'{restarts_html}'
            f'{phrases_section(row, act, best_act, words, chips)}{real_text}'
            f'<section><h2>Optimization curve</h2>{svg}<p class="note">{esc(curve_note)}</p></section>'
            f'<footer>{esc(row["steps"])} steps &times; {esc(row["restarts"])} restarts, seed {esc(row["seed"])}, '
            f'{fmt(row["seconds"], ".3g")} s</footer>')


def writes_section(row: dict, chips: Chips) -> str:
    """The output side: tokens the neuron's output vector (a dictionary feature's decoder direction) promotes and
    suppresses (empty for older stores)."""
    feature = is_feature_site(row.get("site") or "")
    vector = "decoder direction" if feature else "output vector"
    sides = []
    for key, title in (("promotes", "Promotes"), ("suppresses", "Suppresses")):
        toks = list(zip(row.get(f"{key}_tokens") or [], row.get(f"{key}_logits") or []))
        if not toks:
            continue
        scale = max(abs(v) for _, v in toks) or 1e-12
        body = "".join(f'<tr><td class="rank">{rank}</td><td>{chips(t)}</td>'
                       f'<td class="barcell">{bar(abs(v) / scale, "cos")}</td>'
                       f'<td class="num">{fmt(v, "+.3f")}</td></tr>'
                       for rank, (t, v) in enumerate(toks, 1))
        sides.append(f'<div><h2>{"Decoder direction " + title.lower() if feature else title}</h2><p class="note">'
                     f'what it writes: logit of each token when its {vector} is read out</p>'
                     f'<table class="toks">{body}</table></div>')
    if not sides:
        return ""
    how = f" through the {esc(row['readout'])}" if row.get("readout") else ""
    what = ("the feature\'s decoder direction (its row of W_dec, what it adds to the site when it fires) read out "
            "into the vocabulary") if feature else "the neuron\'s output weight vector read out into the vocabulary"
    return (f'<section class="cols writes" id="writes">{"".join(sides)}</section><p class="note">Output side: '
            f'{what}{how}; the input side (above) is what it reads.</p>')


#: What the support section's figures mean (shown under it).
SUPPORT_NOTE = ("k90: the fewest of the row's weights, taken largest magnitude first, whose squares make 90% of the "
                "row's squared norm, out of the site's d neurons. Participation ratio (sum w\u00b2)\u00b2 / sum "
                "w\u2074: the number of equally weighted neurons with the same spread (1 for a single neuron, d for "
                "a row spread evenly over all). A feature carried by a few neurons reads like them; one spread over "
                "many is a direction no single neuron shows.")


def support_section(row: dict, unit_href: Callable[[str], str | None] | None = None) -> str:
    """A dictionary feature's neuron support: for its encoder row (what it reads) and its decoder row (what it
    writes), how many of the site's neurons carry it (k90 of d), the participation ratio and the top neurons with
    their signed weights (:func:`neurotext.model.dictionary.neuron_support`); empty for a row without support.

    Args:
        row: a store row of a feature (``support``: ``{"d", "encoder", "decoder"}``; ``layer``, ``site``).
        unit_href: a neuron's canonical name -> the URL of its page, or None when there is none (plain text).
    """
    sup = row.get("support")
    if not sup:
        return ""
    d, site = sup.get("d"), base_site(row.get("site") or "")
    where = f"L{row.get('layer')}.{site}"
    sides = []
    for key, title, what in (("encoder", "Encoder row", "what the feature reads"),
                             ("decoder", "Decoder row", "what the feature writes")):
        s = sup.get(key)
        if not s:
            continue
        pairs = [(u, w) for u, w in zip(s.get("top_units") or [], s.get("top_weights") or []) if w]  # no zeros
        scale = max((abs(w) for _, w in pairs), default=0.0) or 1e-12
        body = []
        for rank, (u, w) in enumerate(pairs, 1):
            name = unit_name(row["layer"], site, u)
            href = unit_href(name) if unit_href else None
            label = f'<a class="unit" href="{esc(href)}">{esc(name)}</a>' if href else \
                f'<span class="unit">{esc(name)}</span>'
            body.append(f'<tr><td class="rank">{rank}</td><td>{label}</td>'
                        f'<td class="barcell">{bar(abs(w) / scale, "act" if w > 0 else "cos")}</td>'
                        f'<td class="num">{fmt(w, "+.3f")}</td></tr>')
        figures = [("k90", f"{fmt(s.get('k90'), 'd')} of {fmt(d, 'd')}",
                    "fewest neurons holding 90% of the row's squared norm"),
                   ("participation ratio", fmt(s.get("participation_ratio"), ".3g"),
                    "effective number of neurons (1 = one, d = all alike)")]
        cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div>'
                        f'<div class="hint">{esc(h)}</div></div>' for k, v, h in figures)
        sides.append(f'<div class="side {key}"><h3>{title} <span class="muted">({what})</span></h3>'
                     f'<div class="supportcards">{cards}</div><p class="note">top neurons by |weight|, signed '
                     f'(orange positive, blue negative)</p><table class="toks support">{"".join(body)}</table></div>')
    if not sides:
        return ""
    return (f'<section class="support" id="support"><h2>Neuron support</h2><p class="lead">How many of the '
            f'{esc(fmt(d, "d"))} neurons of {esc(where)} carry this feature: its encoder row '
            f'(the weights it reads the site\'s values with) and its decoder row (the direction it writes back), '
            f'each over the site\'s neurons.</p><div class="cols">{"".join(sides)}</div>'
            f'<p class="note">{esc(SUPPORT_NOTE)}</p></section>')


def stability_html(row: dict, chips: Chips) -> tuple[str, str]:
    """The card's lead section (consensus tokens and stability figures, with a visible mark when the
    restarts disagree) and the section listing every restart's nearest tokens.

    ``row["reproducible"]`` is the atlas's verdict against the chance baseline of the store's layer; without
    it (a single result) the restarts' agreement is shown without a verdict on chance."""
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
    elif repro is None:
        verdict = ('<p class="flag neutral">The restarts share consensus tokens. Whether they agree more than '
                   'optima of unrelated neurons do (the chance baseline) is measured over a sweep: see its atlas '
                   'or neurotext words.</p>')
    else:
        verdict = ('<p class="flag stable">Reproducible: the restarts agree on the consensus tokens above chance '
                   '(optima of different neurons of this layer).</p>')
    cons_rows = "".join(
        f'<tr><td>{chips(c["token"])}</td><td class="barcell">'
        f'{bar(c["support"], "cos")}</td><td class="num">{fmt(c["support"], ".0%")}</td></tr>' for c in cons)
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
            f'<tr><td class="rank">{i}</td><td>{chips(t)}</td><td class="num">{fmt(c, ".3f")}'
            f'</td></tr>' for i, (t, c) in enumerate(pairs, 1))
        cent_html = (f'<div><h3>Centroid of the {esc(cent["restarts"])} counted restarts</h3><p class="note">nearest '
                     f'tokens of the normalized mean of their optima: the read-out measured to be most reproducible '
                     f'across seeds; its activation is {fmt(cent["activation"])}{esc(share)}</p>'
                     f'<table class="toks centroid">{cent_rows}</table></div>')
    lead = (f'<section class="stability"><h2>Consensus of restarts</h2>{verdict}'
            f'<div class="cols"><div><p class="note">tokens in the top-10 of at least half of the counted restarts, '
            f'with the share that holds them</p>'
            + (f'<table class="toks consensus">{cons_rows}</table>' if cons_rows else
               '<p class="muted">no consensus token</p>')
            + f'</div><div class="stabcards">{cards}</div></div>'
            + (f'<div class="cols">{cent_html}</div>' if cent_html else "") + '</section>')
    rows = "".join(
        f'<tr><td class="rank">#{esc(d["restart"])}</td><td class="num">{fmt(d["activation"])}</td><td>'
        + " ".join(chips(t) for t in d["nearest_tokens"] or []) + "</td></tr>"
        for d in detail)
    every = (f'<section><h2>Every restart</h2><p class="note">each restart\'s optimum, best first: its activation and '
             f'its nearest tokens by cosine</p><table class="toks restarts">{rows}</table></section>') if rows else ""
    return lead, every


def phrases_section(row: dict, ft_act, best_act, words: dict | None = None, chips: Chips | None = None) -> str:
    """The best real phrase of each length with its activation, beside the FT vector's and the best single
    token's (empty when the row holds no phrases). ``words``: :func:`unit_words` of the architecture."""
    words = words or unit_words(None)
    values = site_words(row.get("site"), words)
    chips = chips or Chips()
    first = esc(words["first"])
    lengths = row.get("phrase_lengths") or []
    if not lengths:
        return ""
    acts = row["phrase_activations"]
    tok_act = row.get("phrase_token_activation")
    scale = max([v for v in (ft_act, best_act, tok_act, *acts) if v is not None and math.isfinite(v)] + [1e-12])
    out = [f'<tr class="ft"><td class="rank"></td><td><span class="tok ftvec">FT vector x</span></td>'
           f'<td class="barcell">{bar((ft_act or 0) / scale, "ftact")}</td><td class="num">{fmt(ft_act)}</td>'
           f'<td></td></tr>',
           f'<tr class="besttok"><td class="rank"></td><td><span class="muted">best single token</span></td>'
           f'<td class="barcell">{bar((tok_act or 0) / scale, "act")}</td><td class="num">{fmt(tok_act)}</td>'
           f'<td></td></tr>']
    for n, toks, a, pos in zip(lengths, row["phrase_tokens"], acts, row["phrase_positions"]):
        shown = " ".join(chips(t) for t in toks)
        out.append(f'<tr class="phrase"><td class="rank">{esc(n)}</td><td class="phrase">{shown}</td>'
                   f'<td class="barcell">{bar(a / scale, "act")}</td><td class="num">{fmt(a)}</td>'
                   f'<td class="num" title="position of the best token in the input ({first} = 0)">'
                   f'@{esc(pos)}</td></tr>')
    note = (f"The best real token sequence of each length n (left column) in {words['template']}, by "
            "gradient-guided coordinate search over the vocabulary (n = 1: the exhaustive scan); its activation is "
            f"the {values['noun']}'s value at the best of the positions t1..tn (@: that position, "
            f"{words['first']} = 0)"
            + values["after"] + ". Special tokens are excluded unless the "
            "sweep included them.")
    return (f'<section id="phrases"><h2>Best real phrases</h2><table class="toks phrases">{"".join(out)}</table>'
            f'<p class="note">{esc(note)}</p></section>')


def curve_svg(curve, reference: float | None = None, label: str = "objective", width: int = 560,
              height: int = 180, max_points: int = 200) -> str:
    """The optimization curve (objective per step) as a self-contained inline SVG string.

    Args:
        curve: objective value at every step (step 0 = the start).
        reference: a horizontal dashed line, e.g. the best real token's activation.
        label: y-axis caption.
        max_points: the curve is subsampled to at most this many points (the last one always kept).

    Returns:
        ``<svg>...</svg>``; only numbers and fixed labels appear in it.
    """
    ys = [float(v) for v in curve if v is not None and math.isfinite(float(v))]
    if len(ys) < 2:
        return '<p class="muted">no optimization curve recorded</p>'
    n = len(ys)
    idx = sorted(set(np.linspace(0, n - 1, min(n, max_points)).round().astype(int).tolist()))
    lo = min(ys + ([reference] if reference is not None else []))
    hi = max(ys + ([reference] if reference is not None else []))
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad_l, pad_r, pad_t, pad_b = 52, 12, 10, 28
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(i):
        return pad_l + w * i / max(n - 1, 1)

    def sy(v):
        return pad_t + h * (1 - (v - lo) / (hi - lo))

    pts = " ".join(f"{sx(i):.1f},{sy(ys[i]):.1f}" for i in idx)
    parts = [f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(label)} versus optimization step">',
             f'<line class="axis" x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}"/>',
             f'<line class="axis" x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}"/>']
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text class="tick" x="{pad_l - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    for i in (0, n - 1):
        parts.append(f'<text class="tick" x="{sx(i):.1f}" y="{pad_t + h + 16}" text-anchor="middle">{i}</text>')
    parts.append(f'<text class="tick" x="{pad_l + w / 2:.1f}" y="{height - 2}" text-anchor="middle">step</text>')
    if reference is not None:
        y = sy(reference)
        parts.append(f'<line class="ref" x1="{pad_l}" y1="{y:.1f}" x2="{pad_l + w}" y2="{y:.1f}"/>')
        parts.append(f'<text class="reflabel" x="{pad_l + w - 4}" y="{y - 5:.1f}" text-anchor="end">'
                     f'best real token {reference:.3g}</text>')
    parts.append(f'<polyline class="line" points="{pts}"/>')
    parts.append(f'<circle class="end" cx="{sx(n - 1):.1f}" cy="{sy(ys[-1]):.1f}" r="3"/>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- real text (corpus examples)
#: The colour of a token's activation at the full scale: positive values orange, negative values blue; zero is
#: white, and the colour is linear in the value between them (CircuitsVis's ColoredTokens).
POSITIVE_RGB = (236, 124, 38)
NEGATIVE_RGB = (74, 134, 232)
HIST_MIN_BAR = 1 / 120  # histogram bins narrower than this share of the axis are merged with their neighbours
SNIPPET_CHARS = 30  # characters each side of a context's max token in a snippet


def _get(ex, key, default=None):
    """A field of a :class:`neurotext.examples.NeuronExamples` or of its dict (``to_dict()``)."""
    return ex.get(key, default) if isinstance(ex, dict) else getattr(ex, key, default)


def _finite_or_none(v) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def shown_examples(ex) -> list[dict]:
    """Every context the real-text section shows: the top contexts, each range's samples, the random ones."""
    ranges = _get(ex, "ranges") or []
    return [*(_get(ex, "top") or []), *(e for r in ranges for e in r.get("examples") or []),
            *(_get(ex, "random") or [])]


def colour_scale(ex) -> float:
    """A neuron's colour scale: the largest absolute value among every position of every context shown and
    the neuron's corpus maximum, so no shown value lies beyond it (0 when every one is 0)."""
    stats = _get(ex, "stats") or {}
    values = [abs(v) for e in shown_examples(ex) for v in e.get("activations") or [] if _finite_or_none(v) is not None]
    top = _finite_or_none(stats.get("max"))
    return max(values + ([abs(top)] if top is not None else []), default=0.0)


def activation_colour(value: float, scale: float) -> str:
    """The background of a token whose activation is ``value`` on a neuron's scale ``scale``
    (:func:`colour_scale`): white at 0, linear towards :data:`POSITIVE_RGB` at ``+scale`` and
    :data:`NEGATIVE_RGB` at ``-scale``. A value beyond the scale is an error, never clamped.

    Returns:
        ``#rrggbb``.
    """
    if not math.isfinite(value) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"activation colour of {value!r} on the scale {scale!r}: both must be finite, the scale >= 0")
    if scale == 0:
        if value != 0:
            raise ValueError(f"activation {value!r} is beyond the colour scale 0")
        return "#ffffff"
    t = abs(value) / scale
    if t > 1 + 1e-9:
        raise ValueError(f"activation {value!r} is beyond the colour scale {scale!r}")
    full = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    return "#" + "".join(f"{round(255 + min(t, 1.0) * (c - 255)):02x}" for c in full)


def _text_positions(e: dict) -> tuple[list[int], bool]:
    """Positions of the context's text tokens (template positions excluded) and whether their character
    spans in ``text`` are known."""
    spans = e.get("spans") or []
    if any(s is not None for s in spans):
        return [i for i, s in enumerate(spans) if s is not None], True
    return [i for i, a in enumerate(e.get("activations") or []) if a is not None], False


def _token_tag(chars: str, value, scale: float, is_max: bool) -> str:
    v = _finite_or_none(value)
    style = f' style="background:{activation_colour(v, scale)}"' if v is not None else ""
    title = ("n/a" if v is None else f"{v:.4g}") + (" \u00b7 the context's max" if is_max else "")
    return f'<span class="t{" max" if is_max else ""}"{style} title="{esc(title)}">{esc(chars)}</span>'


def context_html(e: dict, scale: float, kind: str = PLAIN) -> str:
    """One context as text, every text token's background coloured by its activation
    (:func:`activation_colour` on ``scale``), its value in its title, the context's max token marked.

    The text is rebuilt from ``spans`` (each token's exact characters in ``text``; the characters between
    tokens stay plain text); without spans, from the tokens as shown (:func:`display_token` of ``kind``),
    joined by spaces unless the kind shows its own."""
    positions, exact = _text_positions(e)
    acts, tokens, pos = e.get("activations") or [], e.get("tokens") or [], e.get("position")
    out = []
    if exact:
        text, spans, cur = e.get("text") or "", e["spans"], 0
        for i in positions:
            a, b = spans[i]
            a = min(max(a, cur), len(text))
            b = min(max(b, a), len(text))  # tokens sharing characters (a split character): shown once
            if a > cur:
                out.append(esc(text[cur:a]))
            out.append(_token_tag(text[a:b], acts[i] if i < len(acts) else None, scale, i == pos))
            cur = b
        out.append(esc(text[cur:]))
    else:
        sep = "" if kind in DECODED else " "
        out.append(sep.join(_token_tag(display_token(tokens[i], kind) if i < len(tokens) else "",
                                       acts[i], scale, i == pos) for i in positions))
    return f'<div class="ctx">{"".join(out)}</div>'


def context_snippet(e: dict, kind: str = PLAIN, width: int = SNIPPET_CHARS) -> list[str]:
    """``[left, max token, right]`` of a context: up to ``width`` characters each side of its max token (``…``
    where the context goes on), every run of whitespace as one space."""
    positions, exact = _text_positions(e)
    pos = e.get("position")
    if exact:
        text, span = e.get("text") or "", e["spans"][pos] if pos is not None and pos < len(e["spans"]) else None
        a, b = span or (0, 0)
        left, mid, right = text[:a], text[a:b], text[b:]
    else:
        sep = "" if kind in DECODED else " "
        shown = {i: display_token(e["tokens"][i], kind) for i in positions}
        before, after = [shown[i] for i in positions if i < pos], [shown[i] for i in positions if i > pos]
        left = sep.join(before) + (sep if before else "")
        mid = shown.get(pos, "")
        right = (sep if after else "") + sep.join(after)
    left, mid, right = (re.sub(r"\s+", " ", s) for s in (left, mid, right))
    if len(left) > width:
        left = "\u2026" + left[-width:]
    if len(right) > width:
        right = right[:width] + "\u2026"
    return [left, mid, right]


def max_tokens(ex, kind: str = PLAIN) -> list[str]:
    """The distinct max tokens of a neuron's top contexts (the token at each one's ``position``, as shown),
    in rank order."""
    out: list[str] = []
    for e in _get(ex, "top") or []:
        toks, pos = e.get("tokens") or [], e.get("position")
        if pos is not None and pos < len(toks):
            t = display_token(toks[pos], kind)
            if t not in out:
                out.append(t)
    return out


def histogram_svg(hist: dict, width: int = 560, height: int = 150) -> str:
    """The histogram of a neuron's values at positions (variable-width bins ``lo``, ``hi``, ``count``) as an
    inline SVG: each bar spans its bin's [lo, hi] on a linear axis and its height is the count per unit of
    value, so a bar's area is its count. Bins narrower than :data:`HIST_MIN_BAR` of the axis are merged with
    their neighbours (same sign); the exact-zero bin (lo = hi = 0) is a line at 0."""
    lo, hi, count = hist.get("lo") or [], hist.get("hi") or [], hist.get("count") or []
    bins = [(float(a), float(b), int(c)) for a, b, c in zip(lo, hi, count)]
    if not any(c for _, _, c in bins):
        return '<p class="muted">no positions in the histogram\'s sample</p>'
    xmin, xmax = min(0.0, min(a for a, _, _ in bins)), max(0.0, max(b for _, b, _ in bins))
    if xmax - xmin <= 0:
        xmin, xmax = -1.0, 1.0
    min_w = (xmax - xmin) * HIST_MIN_BAR
    zero = sum(c for a, b, c in bins if a == b)
    bars: list[list[float]] = []  # [lo, hi, count]
    for side in ([b for b in bins if b[1] <= 0 and b[0] < b[1]], [b for b in bins if b[0] >= 0 and b[0] < b[1]]):
        group: list[list[float]] = []
        for a, b, c in side:
            if group and group[-1][1] == a and group[-1][1] - group[-1][0] < min_w:
                group[-1][1], group[-1][2] = b, group[-1][2] + c
            else:
                group.append([a, b, c])
        if len(group) > 1 and group[-1][1] - group[-1][0] < min_w and group[-2][1] == group[-1][0]:
            a, b, c = group.pop()
            group[-1][1], group[-1][2] = b, group[-1][2] + c
        bars += group
    dens = [c / (b - a) for a, b, c in bars]
    top = max(dens, default=0.0) or 1.0  # a dead feature: every position exactly 0, no bar
    pad_l, pad_r, pad_t, pad_b = 12, 12, 8, 24
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(v):
        return pad_l + w * (v - xmin) / (xmax - xmin)

    parts = [f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="histogram of the neuron\'s values at positions">',
             f'<line class="axis" x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}"/>']
    for (a, b, c), d in zip(bars, dens):
        if not c:
            continue
        y = min(pad_t + h * (1 - d / top), pad_t + h - 1)  # at least a pixel high: every counted bin is seen
        cls = "pos" if a >= 0 else "neg"
        parts.append(f'<rect class="{cls}" x="{sx(a):.2f}" y="{y:.2f}" width="{max(sx(b) - sx(a), 0.5):.2f}" '
                     f'height="{pad_t + h - y:.2f}"><title>[{a:.4g}, {b:.4g}]: {c} position{"s" if c != 1 else ""}'
                     f'</title></rect>')
    if zero:
        parts.append(f'<line class="zero" x1="{sx(0):.2f}" y1="{pad_t}" x2="{sx(0):.2f}" y2="{pad_t + h}">'
                     f'<title>exactly 0: {zero} position{"s" if zero != 1 else ""}</title></line>')
    for v, anchor in ((xmin, "start"), (0.0, "middle"), (xmax, "end")):
        if v == 0.0 and (xmin == 0.0 or xmax == 0.0) and anchor == "middle":
            continue
        parts.append(f'<text class="tick" x="{sx(v):.1f}" y="{height - 6}" text-anchor="{anchor}">{v:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _contexts_list(examples: list[dict], scale: float, kind: str, cls: str) -> str:
    items = []
    for e in examples:
        where = f"the context's max; document {e.get('doc')}, context {e.get('context')}, {e.get('part')} part"
        items.append(f'<li><span class="exv" title="{esc(where)}">'
                     f'{fmt(_finite_or_none(e.get("activation")))}</span>{context_html(e, scale, kind)}</li>')
    return f'<ol class="contexts {cls}">{"".join(items)}</ol>'


def examples_section(ex, chips: Chips | None = None, ft_activation: float | None = None) -> str:
    """A neuron's real text: the corpus, its statistics and histogram, the top contexts with every token
    coloured by its activation, samples from the ranges below the top, and random contexts.

    Args:
        ex: a :class:`neurotext.examples.NeuronExamples` or its dict (``to_dict()``).
        chips: how tokens are shown (its vocabulary kind: used where a context has no character spans).
        ft_activation: the FT vector's activation, when a sweep holds the neuron (shown against the corpus max).

    Returns:
        HTML without a script, every value escaped; one colour scale (:func:`colour_scale`) for every context.
    """
    chips = chips or Chips()
    kind = chips.kind
    stats = _get(ex, "stats") or {}
    corpus = _get(ex, "corpus") or {}
    scale = colour_scale(ex)
    share = _finite_or_none(stats.get("share_positive"))
    mx = _finite_or_none(stats.get("max"))
    figures = [
        ("corpus max", fmt(mx), "highest activation at any text position of the corpus"),
        ("mean", fmt(_finite_or_none(stats.get("mean"))), "over every text position"),
        ("std", fmt(_finite_or_none(stats.get("std"))), "standard deviation over every text position"),
        ("above 0", fmt(None if share is None else share, ".2%"), "share of text positions where the value is > 0"),
    ]
    if ft_activation is not None and mx is not None and mx > 0:
        figures.append(("FT / corpus max", fmt(ft_activation / mx, ".3g"),
                        "how far the FT vector's activation exceeds the best position in the corpus"))
    ts = _get(ex, "token_stats") or {}
    if ts.get("omega_squared") is not None:
        figures.append(("token identity \u03c9\u00b2", fmt(ts["omega_squared"], ".3f"),
                        f"share of the variance over positions the token there explains; chance (labels "
                        f"permuted) {fmt(ts.get('omega_squared_permuted'), '.3f')}; a word neuron is near 1"))
    cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div>'
                    f'<div class="hint">{esc(h)}</div></div>' for k, v, h in figures)
    fp = corpus.get("fingerprint")
    lead = (f'corpus <b>{esc(corpus.get("name") or corpus.get("source") or "?")}</b>'
            + (f' (fingerprint <code>{esc(fp)}</code>)' if fp else "")
            + f': {esc(_get(ex, "contexts"))} contexts, {esc(_get(ex, "tokens"))} text tokens')
    hist = stats.get("histogram") or {}
    sample = hist.get("sample") or "a sample of contexts"
    hist_note = (f"Values at {esc(hist.get('positions', '?'))} text positions of {esc(hist.get('contexts', '?'))} "
                 f"contexts: {esc(sample)}. Each bar spans its values on a linear axis; its area is its count "
                 "(narrow bins near 0 are merged).")
    legend = (f'<div class="scale"><span class="num">{fmt(-scale, ".3g")}</span><span class="grad" style="background:'
              f'linear-gradient(to right, {activation_colour(-scale, scale)}, #ffffff, '
              f'{activation_colour(scale, scale)})"></span><span class="num">{fmt(scale, ".3g")}</span></div>')
    scale_note = (f"Every token's background is its activation on one scale for this neuron: white is 0, orange "
                  f"positive, blue negative, the full colour at \u00b1{fmt(scale, '.4g')} (the largest value shown "
                  f"here). Hover a token for its value; the context's max token is outlined. The number before "
                  f"each context is its max.")
    ranges = sorted(_get(ex, "ranges") or [], key=lambda r: -(r.get("range") or 0))
    range_html = "".join(
        f'<div class="range"><h4>({fmt(r.get("lo"), ".4g")}, {fmt(r.get("hi"), ".4g")}] &middot; '
        f'{esc(r.get("contexts"))} context{"s" if r.get("contexts") != 1 else ""} in this range'
        f'{", " + str(len(r.get("examples") or [])) + " shown" if r.get("examples") else ""}</h4>'
        + (_contexts_list(r["examples"], scale, kind, "range") if r.get("examples") else
           '<p class="muted">no context in this range</p>') + '</div>' for r in ranges)
    random = _get(ex, "random") or []
    top = _get(ex, "top") or []
    return (f'<section class="realtext" id="real-text"><h2>Real text</h2><p class="lead">{lead}</p>'
            f'<section class="metrics">{cards}</section>'
            f'<div class="histwrap">{histogram_svg(hist)}<p class="note">{hist_note}</p></div>'
            f'<h3>Top contexts</h3>{legend}<p class="note">{esc(scale_note)}</p>'
            + (_contexts_list(top, scale, kind, "top") if top else '<p class="muted">no context</p>')
            + (f'<h3>Samples from lower ranges</h3><p class="note">contexts drawn uniformly from ranges of the '
               f'context max below the top (bounds, then how many contexts of the corpus fall in each)</p>'
               f'{range_html}' if ranges else "")
            + (f'<h3>Random contexts</h3><p class="note">contexts drawn uniformly from the corpus (the same for every '
               f'neuron of the pass)</p>{_contexts_list(random, scale, kind, "random")}' if random else "")
            + (f'<p class="note">The {esc(CONVENTION)}.</p>' if kind in DECODED and not _has_spans(top) else "")
            + '</section>')


def _has_spans(examples: list[dict]) -> bool:
    return any(s is not None for e in examples for s in e.get("spans") or [])
