"""Jupyter display of results.

A textualization result (:class:`neurotext.NeuronResult`) shows its card, the same as its page in the atlas
(one renderer, :mod:`neurotext.display.card`; a dictionary feature's card has its neuron support, the neurons as plain
text); a phrase result the card's phrases section; a neuron's corpus
examples (:class:`neurotext.examples.NeuronExamples`) the page's real-text section; a list of results
(:class:`Results`, what ``Textualizer.run``, ``textualize``, ``Phraser.run``, ``Examiner.run`` and
``examples`` return) a table of its neurons, one row each.

The HTML is self-contained: the card's stylesheet (``atlas/assets/card.css``) in a ``<style>`` whose rules
are all scoped under the class ``nt``, so the notebook around it is untouched; no script, ever; no link that
would lead nowhere outside the atlas (token chips are not links). Every value is escaped: token strings are
untrusted. Tokens are shown by the convention of :mod:`neurotext.model.tokens`.
"""

from __future__ import annotations

from ..model.names import parse_name
from ..model.tokens import CONVENTION, DECODED, detect_kind
from .card import (
    Chips,
    card_css,
    context_snippet,
    esc,
    examples_section,
    fmt,
    max_tokens,
    neuron_card,
    neuron_header,
    phrases_section,
    unit_words,
)

SHOWN_TOKENS = 3  # tokens per list in a row of a results table (as in the atlas index)


class Results(list):
    """A list of results that shows, in Jupyter, a table of its neurons; still a plain ``list``.

    Each element shows its own card: display ``results[i]``.
    """

    def _repr_html_(self) -> str | None:
        return results_html(self)


def panel(inner: str) -> str:
    """HTML in the card's scope with its stylesheet: what a notebook output holds."""
    return f'<div class="nt nt-nb"><style>{card_css()}</style>{inner}</div>'


def _chips(result, row: dict) -> Chips:
    """How a result's tokens are shown: its ``token_kind``, else the kind its token strings show."""
    kind = result.token_kind or detect_kind(
        t for key in ("nearest_tokens", "best_tokens", "promotes_tokens", "suppresses_tokens")
        for t in row.get(key) or [])
    return Chips(kind)


def _convention(chips: Chips) -> str:
    return f'<p class="note">The {esc(CONVENTION)}.</p>' if chips.kind in DECODED else ""


def result_html(result) -> str:
    """A :class:`neurotext.NeuronResult` as its card (:func:`neurotext.display.card.neuron_card`)."""
    row = result.to_row()
    chips = _chips(result, row)
    return panel(neuron_header(row, f"neurotext \u00b7 {result.model}")
                 + neuron_card(row, chips, result.model_type or None))


def phrases_html(result) -> str:
    """A :class:`neurotext.phrases.PhraseResult` as the phrases section of the neuron's card."""
    row = result.to_row()
    kind = result.token_kind or detect_kind(t for toks in row["phrase_tokens"] for t in toks)
    chips = Chips(kind)
    section = phrases_section(row, result.ft_activation, result.best_token_activation,
                              unit_words(result.model_type or None), chips)
    took = f", {fmt(result.seconds, '.3g')} s" if result.seconds else ""
    return panel(neuron_header(row, f"neurotext \u00b7 {result.model}") + section + _convention(chips)
                 + f'<footer>seed {esc(result.seed)}{took}</footer>')


def _examples_chips(ex) -> Chips:
    """How a neuron's corpus examples show tokens: the kind their token strings show."""
    return Chips(detect_kind(t for e in (ex.top or [])[:20] for t in e.get("tokens") or []))


def _examples_header(ex) -> str:
    n = parse_name(ex.neuron) if isinstance(ex.neuron, str) else None
    if n is None:  # a direction's examples
        return (f'<header><div class="brand">neurotext \u00b7 {esc(ex.model)}</div><h1>{esc(ex.neuron)}</h1>'
                '</header>')
    row = {"neuron": ex.neuron, "layer": n.layer, "site": n.site, "unit": n.unit}
    return neuron_header(row, f"neurotext \u00b7 {ex.model}")


def examples_html(ex) -> str:
    """A :class:`neurotext.examples.NeuronExamples` as the real-text section of its atlas page
    (:func:`neurotext.display.card.examples_section`)."""
    return panel(_examples_header(ex) + examples_section(ex, _examples_chips(ex)))


def _cells(values) -> str:
    return "".join(f'<td class="num">{esc(v)}</td>' for v in values)


def _head(names: list[str], num: set[str]) -> str:
    return "".join(('<th class="num">' if h in num else "<th>") + f"{esc(h)}</th>" for h in names)


def _token_cell(chips: Chips, tokens: list[str]) -> str:
    more = f' <span class="muted">+{len(tokens) - SHOWN_TOKENS}</span>' if len(tokens) > SHOWN_TOKENS else ""
    return '<td class="toks">' + "".join(chips(t) for t in tokens[:SHOWN_TOKENS]) + more + "</td>"


def _neuron_table(results) -> tuple[str, set[str]]:
    head = ["neuron", "activation", "best token", "FT / best", "retention", "overlap@10", "restarts J@10",
            "consensus of restarts", "FT nearest tokens", "best real tokens"]
    num = {"activation", "best token", "FT / best", "retention", "overlap@10", "restarts J@10"}
    rows, kinds = [], set()
    for r in results:
        row = r.to_row()
        chips = _chips(r, row)
        kinds.add(chips.kind)
        st = r.stability or {}
        ratio = r.activation / row["best_activation"] if row["best_activation"] and row["best_activation"] > 0 \
            else None
        cons = [c["token"] for c in st.get("consensus") or []]
        unstable = bool(st) and (st.get("restarts", 0) < 2 or not cons)
        rows.append(('<tr class="unstable">' if unstable else "<tr>") + f'<td class="name">{esc(r.neuron)}</td>'
                    + _cells([fmt(r.activation), fmt(row["best_activation"]), fmt(ratio, ".3g"),
                              fmt(r.retention, ".3f"), fmt(r.overlap_at_10, ".2f"),
                              fmt(st.get("jaccard_at_10"), ".2f")])
                    + _token_cell(chips, cons) + _token_cell(chips, row["nearest_tokens"])
                    + _token_cell(chips, row["best_tokens"]) + "</tr>")
    th = _head(head, num)
    return (f'<div class="listwrap"><table class="list neurons"><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>', kinds)


def _phrase_table(results) -> tuple[str, set[str]]:
    head = ["neuron", "FT activation", "best token", "best phrase", "activation", "/ token", "length"]
    num = {"FT activation", "best token", "activation", "/ token", "length"}
    rows, kinds = [], set()
    for r in results:
        row = r.to_row()
        chips = Chips(r.token_kind or detect_kind(t for toks in row["phrase_tokens"] for t in toks))
        kinds.add(chips.kind)
        b = r.best_phrase
        best = next(p for p in r.phrases if p["length"] == b["length"])
        ratio = b["activation"] / r.best_token_activation if r.best_token_activation > 0 else None
        rows.append(f'<tr><td class="name">{esc(r.neuron)}</td>'
                    + _cells([fmt(r.ft_activation), fmt(r.best_token_activation)])
                    + '<td class="toks">' + "".join(chips(t["token"]) for t in best["tokens"]) + "</td>"
                    + _cells([fmt(b["activation"]), fmt(ratio, ".2f"), b["length"]]) + "</tr>")
    th = _head(head, num)
    return (f'<div class="listwrap"><table class="list phrases"><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>', kinds)


def _examples_table(results) -> tuple[str, set[str]]:
    head = ["neuron", "corpus max", "mean", "above 0", "max tokens of the top contexts", "top context"]
    num = {"corpus max", "mean", "above 0"}
    rows, kinds = [], set()
    for r in results:
        chips = _examples_chips(r)
        kinds.add(chips.kind)
        st = r.stats or {}
        left, mid, right = context_snippet(r.top[0], chips.kind) if r.top else ("", "", "")
        rows.append(f'<tr><td class="name">{esc(r.neuron)}</td>'
                    + _cells([fmt(st.get("max")), fmt(st.get("mean")), fmt(st.get("share_positive"), ".2%")])
                    + _token_cell(chips, max_tokens(r, chips.kind)) + f'<td class="snippet">{esc(left)}<b>{esc(mid)}'
                    f'</b>{esc(right)}</td></tr>')
    th = _head(head, num)
    return (f'<div class="listwrap"><table class="list examples"><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>', kinds)


def results_html(items) -> str | None:
    """A list of results as one table per kind of result (None, so the plain ``repr`` shows, for an empty
    list or one holding anything else)."""
    neurons = [r for r in items if hasattr(r, "nearest") and hasattr(r, "to_row")]
    phrases = [r for r in items if hasattr(r, "best_phrase") and hasattr(r, "to_row")]
    corpus = [r for r in items if hasattr(r, "top") and hasattr(r, "stats") and hasattr(r, "ranges")]
    if not items or len(neurons) + len(phrases) + len(corpus) != len(items):
        return None
    parts, kinds = [], set()
    if neurons:
        table, k = _neuron_table(neurons)
        parts.append(table)
        kinds |= k
    if phrases:
        table, k = _phrase_table(phrases)
        parts.append(('<h2>Best real phrases</h2>' if neurons else "") + table)
        kinds |= k
    if corpus:
        table, k = _examples_table(corpus)
        parts.append(('<h2>Real text</h2>' if neurons or phrases else "") + table)
        kinds |= k
    models = ", ".join(sorted({r.model for r in items}))
    what = " and ".join(w for w, n in (("textualization", len(neurons)), ("phrase", len(phrases)),
                                       ("corpus example", len(corpus))) if n)
    note = (("Each result shows its card: display results[i]." if neurons or phrases else
             "Each result shows its real text: display results[i].")
            + (" Neurons in red: the restarts share no consensus token." if neurons else "")
            + (f" The {CONVENTION}." if kinds & set(DECODED) else ""))
    return panel(f'<header><div class="brand">neurotext \u00b7 {esc(models)}</div>'
                 f'<p class="lead">{len(items)} {what} result{"s" if len(items) != 1 else ""}</p></header>'
                 + "".join(parts) + f'<p class="note">{esc(note)}</p>')
