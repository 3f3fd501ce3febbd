"""The atlas's Q2 page on real text: ``neurotext probe`` results (``probe.json``), with FT beside them.

Per word, one chart per layer and site (an inline SVG, like the card's curves): the test average precision of the
probe retrained on the top k units by weight and on k random units, for neurons and for dictionary features where
the probe had them, the chance level, each ranked curve's k95 marked; and FT's recovery of the word at that layer
(``neurotext encode``: the word's rank among the FT vector's nearest tokens at each k, its smallest recovering k
as a vertical line). Beside the charts a table of the numbers (full probe's AP and AUROC, k95/k99 and their
random-unit counterparts, the best single unit, the control word and the selectivity, FT's k and the units FT and
the probe share). The index gets a summary per layer and site and a link. Skipped words are listed with their
reasons.

The page is static: no script, every value escaped (words and tokens are untrusted), every number in a cell's
``title`` at full precision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..analysis.encode import RECOVERED_TOP
from ..analysis.probe import DEFINITIONS, PROBE_JSON
from ..analysis.stats import quartiles
from ..display.card import Chips, esc, fmt
from ..errors import NeurotextError
from ..model.names import SITES, feature_site, unit_name
from ..model.tokens import PLAIN

UNITS = ("neurons", "features")
#: Curve colours, as the probe's figures draw them (:data:`neurotext.analysis.plots.PROBE_COLORS`); dashed: random.
SERIES = (("neurons", "ap_by_k", "ranked", "#3b6fd4"), ("neurons", "random_ap_by_k", "random", "#888888"),
          ("features", "ap_by_k", "ranked", "#2a9d5c"), ("features", "random_ap_by_k", "random", "#8fd1ab"))
FT_COLOUR = "#c0392b"
SERIES_LABELS = {"ranked": "top k units by probe weight", "random": "k random units"}
SELECT_LABELS = {"zscore": "z", "zhigh": "z+", "random": "rnd"}
TOP_UNITS = 8  # the table lists the ranking's units up to k95, at most this many
#: A record's required fields (besides ``word``) and what each must be.
REQUIRED = {"layer": "an integer", "site": f"one of {', '.join(SITES)}", "units": "neurons or features",
            "width": "a positive integer", "ap_by_k": "an object k -> AP", "random_ap_by_k": "an object k -> AP"}


# --------------------------------------------------------------------------- inputs
def find_probe(store_dir, probe=None) -> Path | None:
    """Where the probe results are: ``probe`` (``probe.json`` or a folder holding it) when given, else
    ``DIR/probe/probe.json`` or ``DIR/probe.json`` when present, else None."""
    if probe is not None:
        p = Path(probe)
        p = p / PROBE_JSON if p.is_dir() else p
        if not p.is_file():
            raise NeurotextError(f"--probe {probe}: no such file (expected the {PROBE_JSON} of neurotext probe --out)")
        return p
    for p in (Path(store_dir) / "probe" / PROBE_JSON, Path(store_dir) / PROBE_JSON):
        if p.is_file():
            return p
    return None


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _curve_ok(v) -> bool:
    return isinstance(v, dict) and all(str(k).isdigit() and int(k) > 0 and (x is None or isinstance(x, (int, float)))
                                       for k, x in v.items())


def _record_problem(r) -> str | None:
    if not isinstance(r, dict) or not isinstance(r.get("word"), str):
        return "not a record with a word"
    if "skipped" in r:
        return None if isinstance(r["skipped"], str) else "skipped without a reason"
    checks = {"layer": _int(r.get("layer")) and r["layer"] >= 0, "site": r.get("site") in SITES,
              "units": r.get("units") in UNITS, "width": _int(r.get("width")) and r["width"] > 0,
              "ap_by_k": _curve_ok(r.get("ap_by_k")), "random_ap_by_k": _curve_ok(r.get("random_ap_by_k"))}
    bad = [k for k, ok in checks.items() if not ok]
    return f"needs {', '.join(f'{k} ({REQUIRED[k]})' for k in bad)}" if bad else None


def read_probe(path) -> list[dict]:
    """Load and check the records of ``neurotext probe`` (``--json`` or ``probe.json`` of ``--out``); bad content is a
    NeurotextError naming the record."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NeurotextError(f"{path}: unreadable probe results ({e})") from e
    if not isinstance(doc, list):
        raise NeurotextError(f"{path}: not neurotext probe results (a list of records)")
    for r in doc:
        problem = _record_problem(r)
        if problem:
            raise NeurotextError(f"{path}: malformed probe record {json.dumps(r)[:120]}: {problem}")
    return doc


def probe_model(records: list[dict]) -> str | None:
    return next((r.get("model") for r in records if "skipped" not in r and r.get("model")), None)


def token_strings(records: list[dict]):
    """Every vocabulary string the records hold (the words' forms, the control tokens): they tell the kind."""
    for r in records:
        yield from r.get("tokens") or []
        if isinstance(r.get("control"), dict) and isinstance(r["control"].get("token"), str):
            yield r["control"]["token"]


# --------------------------------------------------------------------------- FT beside the probe
def same_model(records: list[dict], encode: dict | None) -> bool:
    """Whether an encode document may stand beside the probe records: both of the same model (or either silent)."""
    if encode is None:
        return False
    model = probe_model(records)
    return model is None or encode.get("model") in (None, model)


def ft_results(encode: dict | None) -> dict[tuple[str, int], dict]:
    """Per (word, layer) of an encode document: ``{"site", "k"}`` (the smallest recovering k with z-score units, None
    when no k recovered the word) and ``"curves"`` (select -> [(k, rank)], sorted by k). Rows without these fields
    are passed over (the atlas checks only an encode document's ``results``)."""
    if not encode:
        return {}
    site = encode.get("site")
    out: dict[tuple[str, int], dict] = {}

    def entry(r):
        return out.setdefault((r["word"], r["layer"]), {"site": site, "k": None, "curves": {}})

    for r in encode.get("smallest_k") or []:
        if isinstance(r, dict) and r.get("select") == "zscore" and isinstance(r.get("word"), str) \
                and _int(r.get("layer")) and (r.get("k") is None or _int(r["k"])):
            entry(r)["k"] = r["k"]
    for r in encode.get("per_word") or []:
        if isinstance(r, dict) and isinstance(r.get("word"), str) and _int(r.get("layer")) \
                and isinstance(r.get("select"), str) and _int(r.get("k")) and _int(r.get("rank")):
            entry(r)["curves"].setdefault(r["select"], []).append((r["k"], r["rank"]))
    for e in out.values():
        for pts in e["curves"].values():
            pts.sort()
    return out


def ft_of(rec: dict, fts: dict) -> dict | None:
    """FT's result for a record's word, layer and site: ``{"k", "curves", "shared"...}``; the probe's own ``ft``
    block (``probe --encode``) gives k and the overlap, the atlas's encode results the curves (and the k where the
    probe has none). None where FT has no result there."""
    enc = fts.get((rec["word"], rec["layer"]))
    enc = enc if enc is not None and enc["site"] == rec["site"] else None
    own = rec.get("ft") if isinstance(rec.get("ft"), dict) else None
    if own is None and enc is None:
        return None
    out = {"k": own.get("k") if own is not None else enc["k"], "curves": enc["curves"] if enc else {}}
    if own is not None:
        out.update({k: own[k] for k in ("probe_k", "shared", "jaccard", "chance_shared") if k in own})
        if enc is not None and enc["k"] != own.get("k"):
            out["encode_k"] = enc["k"]
    return out


# --------------------------------------------------------------------------- summaries
def words_of(records: list[dict]) -> list[str]:
    """The probed words, in the records' order."""
    return list(dict.fromkeys(r["word"] for r in records if "skipped" not in r))


def k_quartiles(ks, never: bool = False) -> dict:
    """Median and quartiles of counts k as observed values (``inverted_cdf``, as ``neurotext encode`` summarizes its
    smallest k); ``never``: a None is a word never recovered, larger than every k (a quantile there is ``inf``, shown
    as "never"), else it is left out. ``{"median", "q1", "q3", "n"}``."""
    v = np.asarray([math.inf if k is None else k for k in ks if k is not None or never], dtype=np.float64)
    if v.size == 0:
        return {"median": None, "q1": None, "q3": None, "n": 0}
    q1, med, q3 = (np.quantile(v, q, method="inverted_cdf") for q in (0.25, 0.5, 0.75))
    return {"median": int(med) if np.isfinite(med) else math.inf, "q1": int(q1) if np.isfinite(q1) else math.inf,
            "q3": int(q3) if np.isfinite(q3) else math.inf, "n": int(v.size)}


def summary_rows(records: list[dict], fts: dict) -> list[dict]:
    """Per (layer, site, units): the words, quartiles of k95, k99, random k95 (observed ks), of the full probe's AP
    and the selectivity, and (neurons) of FT's smallest k over the words FT ran (a word it never recovered counts as
    larger than every k), with how many it recovered."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if "skipped" not in r:
            groups.setdefault((r["layer"], r["site"], r["units"]), []).append(r)
    out = []
    for (layer, site, units), rs in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0], UNITS.index(g[0][2]))):
        row = {"layer": layer, "site": site, "units": units, "words": len(rs), "width": rs[0]["width"]}
        for key in ("k95", "k99", "random_k95"):
            row[key] = k_quartiles([r.get(key) for r in rs if _int(r.get(key))])
        for key in ("ap_full", "selectivity"):
            row[key] = quartiles([r.get(key) for r in rs])
        fk = [f["k"] for f in (ft_of(r, fts) for r in rs) if f is not None] if units == "neurons" else []
        row["ft"] = {**k_quartiles(fk, never=True), "recovered": sum(k is not None for k in fk),
                     "words": len(fk)} if fk else None
        out.append(row)
    return out


def _q(q: dict | None, spec: str = ".3g") -> str:
    def one(v):
        return "never" if v == math.inf else fmt(v, spec)

    if not q or q.get("median") is None:
        return "n/a"
    if q["n"] == 1 or q["q1"] == q["q3"]:
        return one(q["median"])
    return f"{one(q['median'])} [{one(q['q1'])}\u2013{one(q['q3'])}]"


def summary_table(rows: list[dict]) -> str:
    """The per (layer, site, units) table, medians with [q1-q3]."""
    head = ["layer", "site", "units", "words", "k95", "k99", "random k95", "full probe AP", "selectivity",
            "FT k (recovered)"]
    body = []
    for s in rows:
        ft = s["ft"]
        ft_cell = f"{_q(ft)} ({ft['recovered']}/{ft['words']})" if ft else "\u2014"
        cells = [f"L{s['layer']}", s["site"], f"{s['units']} ({s['width']})", s["words"], _q(s["k95"]), _q(s["k99"]),
                 _q(s["random_k95"]), _q(s["ap_full"], ".3f"), _q(s["selectivity"], "+.3f"), ft_cell]
        body.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return (f'<table class="stats q2sum"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>'
            '<p class="note">Medians over the words, [first\u2013third quartile]; k95/k99: the smallest k of the '
            'ranked units keeping 95%/99% of the full probe\'s average precision; random k95: the same with random '
            'units; FT k: the smallest k at which feature textualization recovers the word (neurotext encode, z-score '
            'units) over the words FT ran, a word it never recovered counting as larger than every k (never), and '
            'how many it recovered.</p>')


def index_info(records: list[dict], path: Path, fts: dict, href: str) -> dict:
    """What the index shows of the probe results (:func:`index_section`)."""
    done = [r for r in records if "skipped" not in r]
    first = done[0] if done else {}
    return {"href": href, "source": str(path), "model": probe_model(records), "corpus": first.get("corpus"),
            "words": len(words_of(records)), "skipped": sum("skipped" in r for r in records),
            "summary": summary_rows(records, fts)}


def index_section(info: dict) -> str:
    """The index's "Q2 on real text" section: what the probe asks, the summary per layer and site, the link."""
    return (f'<section id="q2-text"><h2>Q2 on real text &middot; How many units does a probe need to find a word?</h2>'
            f'<p class="lead">For each word, a sparse linear probe &ldquo;this position is the word&rdquo; over a '
            f'site\'s units on the corpus {esc(info.get("corpus") or "?")} (neurotext probe), its units ranked by '
            f'weight and retrained on the top k, beside k random units and a control word of the same frequency; '
            f'FT\'s answer (neurotext encode) beside it where the atlas has it.</p>'
            f'<p class="q2link"><a href="{esc(info["href"])}">Open the Q2 page: each word\'s curves and numbers per '
            f'layer and site &rarr;</a> <span class="muted">{esc(info["words"])} words'
            + (f', {esc(info["skipped"])} skipped' if info["skipped"] else "") + '</span></p>'
            + summary_table(info["summary"]) + f'<p class="note">From {esc(info["source"])}.</p></section>')


# --------------------------------------------------------------------------- the chart
def _ticks(xmax: int) -> list[int]:
    top = max(1, math.ceil(math.log2(xmax)))
    step = max(1, math.ceil(top / 6))
    return [2 ** e for e in range(0, top + 1, step) if 2 ** e <= xmax]


def curve_svg(recs: dict[str, dict], ft: dict | None, label: str, width: int = 330) -> str:
    """One word at one layer and site: AP by k (log2 axis) of the ranked and random units, neurons and features,
    with the chance level and each ranked curve's k95; FT's rank at each k as a strip of marks under the axis
    (filled: rank 1; ring: in the top 10; grey: further) and its smallest recovering k as a vertical line.

    Args:
        recs: units ("neurons", "features") -> the probe record.
        ft: :func:`ft_of` of the neurons' record, or None.
        label: the chart's accessible name.

    Returns:
        ``<svg>...</svg>``: numbers and fixed labels only, besides the escaped ``label``.
    """
    curves = (ft or {}).get("curves") or {}
    strip = [s for s in ("zscore", "zhigh", "random") if s in curves] + sorted(set(curves) - set(SELECT_LABELS))
    ks = [int(k) for r in recs.values() for key in ("ap_by_k", "random_ap_by_k") for k in r[key]]
    ks += [k for pts in curves.values() for k, _ in pts] + [r["width"] for r in recs.values()]
    xmax = max(ks + [2])
    pad_l, pad_r, pad_t, ph = 46, 12, 14, 110
    pw = width - pad_l - pad_r
    axis_y = pad_t + ph
    height = axis_y + 22 + 13 * len(strip) + (4 if strip else 0)

    def sx(k):
        return pad_l + pw * math.log2(k) / math.log2(xmax)

    def sy(v):
        return pad_t + ph * (1 - max(0.0, min(1.0, v)))

    parts = [f'<svg class="apk" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{esc(label)}">',
             f'<line class="grid" x1="{pad_l}" y1="{sy(0.5):.1f}" x2="{pad_l + pw}" y2="{sy(0.5):.1f}"/>',
             f'<line class="axis" x1="{pad_l}" y1="{axis_y}" x2="{pad_l + pw}" y2="{axis_y}"/>',
             f'<line class="axis" x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{axis_y}"/>']
    for v in (0, 0.5, 1):
        parts.append(f'<text class="tick" x="{pad_l - 5}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    ticks = _ticks(xmax)
    if sx(xmax) - sx(ticks[-1]) > 26:
        ticks.append(xmax)
    for k in ticks:
        parts.append(f'<text class="tick" x="{sx(k):.1f}" y="{axis_y + 13}" text-anchor="middle">{k}</text>')
    chance = next((r.get("chance_ap") for r in recs.values() if isinstance(r.get("chance_ap"), (int, float))), None)
    if chance is not None:
        parts.append(f'<line class="chance" x1="{pad_l}" y1="{sy(chance):.1f}" x2="{pad_l + pw}" '
                     f'y2="{sy(chance):.1f}"><title>chance AP {chance:.4g}</title></line>')
    ft_k = (ft or {}).get("k")
    if _int(ft_k) and ft_k > 0:
        x = sx(min(ft_k, xmax))
        parts.append(f'<line class="ftk" x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{height - 4}" stroke="{FT_COLOUR}">'
                     f'<title>FT recovers the word from k = {ft_k} units</title></line>'
                     + (f'<text class="ftlabel" x="{x + 3:.1f}" y="{pad_t - 3}">FT {ft_k}</text>' if x < width - 48
                        else f'<text class="ftlabel" x="{x - 3:.1f}" y="{pad_t - 3}" text-anchor="end">FT {ft_k}'
                             '</text>'))
    for units, key, kind, colour in SERIES:
        r = recs.get(units)
        if r is None:
            continue
        pts = sorted((int(k), v) for k, v in r[key].items() if v is not None)
        if not pts:
            continue
        coords = " ".join(f"{sx(k):.1f},{sy(v):.1f}" for k, v in pts)
        values = ", ".join(f"{k}: {v:.4g}" for k, v in pts)
        parts.append(f'<polyline class="s {units} {kind}" points="{coords}" stroke="{colour}" '
                     f'data-units="{units}" data-curve="{key}"><title>{units}, {SERIES_LABELS[kind]}: AP at k = '
                     f'{values}</title></polyline>')
        k95 = r.get("k95")
        if kind == "ranked" and _int(k95) and r[key].get(str(k95)) is not None:
            v = r[key][str(k95)]
            parts.append(f'<circle class="k95" cx="{sx(k95):.1f}" cy="{sy(v):.1f}" r="3.2" fill="{colour}">'
                         f'<title>{units}: k95 = {k95} (AP {v:.4g} of the full {fmt(r.get("ap_full"))})</title>'
                         f'</circle>')
    for i, sel in enumerate(strip):
        y = axis_y + 28 + 13 * i
        parts.append(f'<text class="ftsel" x="{pad_l - 8}" y="{y + 3.5:.1f}" text-anchor="end" fill="{FT_COLOUR}">'
                     f'FT {esc(SELECT_LABELS.get(sel, sel))}</text>')
        for k, rank in curves[sel]:
            cls = "hit" if rank == 1 else "top" if rank <= RECOVERED_TOP else "miss"
            parts.append(f'<circle class="ft {cls}" cx="{sx(k):.1f}" cy="{y:.1f}" r="3.5" data-select="{esc(sel)}" '
                         f'data-k="{k}" data-rank="{rank}"><title>FT, {esc(sel)} units, k = {k}: the word at rank '
                         f'{rank}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def legend() -> str:
    """What the charts' marks mean (once, above the words)."""
    def line(colour, dashed):
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        return (f'<svg width="28" height="10" aria-hidden="true"><line x1="1" y1="5" x2="27" y2="5" '
                f'stroke="{colour}" stroke-width="2"{dash}/></svg>')

    items = [f'{line(c, kind == "random")} {units}, {SERIES_LABELS[kind]}' for units, _, kind, c in SERIES]
    items += ['<svg width="28" height="10" aria-hidden="true"><line x1="1" y1="5" x2="27" y2="5" stroke="#9aa1ad" '
              'stroke-dasharray="1 3" stroke-width="1.5"/></svg> chance AP',
              '<svg width="14" height="10" aria-hidden="true"><circle cx="7" cy="5" r="3.2" fill="#3b6fd4"/></svg> k95',
              f'<svg width="14" height="10" aria-hidden="true"><line x1="7" y1="0" x2="7" y2="10" stroke="{FT_COLOUR}" '
              'stroke-dasharray="3 2" stroke-width="1.5"/></svg> FT\'s smallest recovering k',
              f'<svg width="40" height="10" aria-hidden="true"><circle cx="5" cy="5" r="3.5" fill="{FT_COLOUR}"/>'
              f'<circle cx="20" cy="5" r="3" fill="none" stroke="{FT_COLOUR}" stroke-width="1.5"/>'
              '<circle cx="35" cy="5" r="3" fill="none" stroke="#b9bec7" stroke-width="1.5"/></svg> '
              f'FT at each k: rank 1 / top {RECOVERED_TOP} / further (z: z-score units, rnd: random units)']
    return '<p class="q2legend">' + "".join(f'<span>{i}</span>' for i in items) + "</p>"


# --------------------------------------------------------------------------- the page
def _v(key: str, v, spec: str = ".3f") -> str:
    """A number of a record, shown rounded: ``data-key`` names its field, the title holds its exact value."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return f'<span class="v muted" data-key="{esc(key)}">n/a</span>'
    shown = str(v) if _int(v) else fmt(v, spec)
    return f'<span class="v" data-key="{esc(key)}" title="{esc(repr(v))}">{esc(shown)}</span>'


def _unit(layer: int, site: str, units: str, unit: int, unit_href) -> str:
    """A unit of the row's site by its index (``f12`` for a feature), its canonical name in the title; a link to its
    page where the atlas has one."""
    feature = units == "features"
    name = unit_name(layer, feature_site(site) if feature else site, unit)
    href = unit_href(name) if unit_href else None
    shown = f"f{unit}" if feature else str(unit)
    return (f'<a class="unit" href="{esc(href)}" title="{esc(name)}">{esc(shown)}</a>' if href else
            f'<span class="unit" title="{esc(name)}">{esc(shown)}</span>')


def _ft_cells(ft: dict | None) -> list[tuple[str, str]]:
    if ft is None:
        return [("num muted", "\u2014"), ("l muted", "\u2014")]
    k = ft["k"]
    shown = _v("ft_k", k) if _int(k) else '<span class="v muted" data-key="ft_k">never</span>'
    if "encode_k" in ft:
        other = ft["encode_k"] if ft["encode_k"] is not None else "never"
        shown += (f' <span class="warn" title="the encode results of this atlas give {esc(other)}; this is the '
                  f'probe\'s own (its --encode)">\u2260 {esc(other)}</span>')
    shared = (f'{_v("ft_shared", ft["shared"])} of {_v("ft_probe_k", ft.get("probe_k"))} <span class="muted">'
              f'(chance {_v("ft_chance_shared", ft.get("chance_shared"), ".2f")}; Jaccard '
              f'{_v("ft_jaccard", ft.get("jaccard"), ".2f")})</span>' if "shared" in ft else
              '<span class="muted">\u2014</span>')
    return [("num", shown), ("l ftshared", shared)]


def _record_row(r: dict, ft: dict | None, chips: Chips, unit_href) -> str:
    """One row of a word's table: a probe record (a layer, site and kind of unit) and, for neurons, FT beside it."""
    layer, site, units = r["layer"], r["site"], r["units"]
    best = r.get("best_single") if isinstance(r.get("best_single"), dict) else None
    ctrl = r.get("control") if isinstance(r.get("control"), dict) else None
    ranking = [u for u in (r.get("ranking") or []) if _int(u)]
    top = ranking[:min(r["k95"], TOP_UNITS)] if _int(r.get("k95")) else []
    more = (r["k95"] - len(top)) if _int(r.get("k95")) and len(ranking) >= r["k95"] else 0
    top_html = ", ".join(_unit(layer, site, units, u, unit_href) for u in top) \
        + (f' <span class="more">+{more}</span>' if more > 0 else "")
    if best and _int(best.get("unit")):
        sign = "+" if best.get("sign", 1) >= 0 else "\u2212"
        best_html = (f'{_unit(layer, site, units, best["unit"], unit_href)} <span class="muted" title="the sign of '
                     f'the unit\'s value for the word">{sign}</span> {_v("best_single_ap", best.get("ap"))}')
    else:
        best_html = '<span class="muted">\u2014</span>'
    if ctrl and isinstance(ctrl.get("token"), str):
        ctrl_html = f'{chips(ctrl["token"])} {_v("control_ap", ctrl.get("ap_full"))}'
    else:
        ctrl_html = '<span class="muted">none</span>'
    cells = [("l site", f"L{esc(layer)}.{esc(site)}"),
             ("l", f'{esc(units)} <span class="muted">({esc(r["width"])})</span>'),
             ("num", "/".join(_v(key, r.get(key)) for key in ("positives_train", "positives_test"))),
             ("num", _v("ap_full", r.get("ap_full"))), ("num", _v("auroc_full", r.get("auroc_full"))),
             ("num", _v("chance_ap", r.get("chance_ap"))),
             *(("num", _v(key, r.get(key))) for key in ("k95", "k99", "random_k95", "random_k99")),
             ("l units", top_html or "\u2014"), ("l", best_html), ("l", ctrl_html),
             ("num", _v("selectivity", r.get("selectivity"), "+.3f")), *_ft_cells(ft)]
    return (f'<tr class="{esc(units)}" data-layer="{esc(layer)}" data-site="{esc(site)}" data-units="{esc(units)}">'
            + "".join(f'<td class="{c}">{h}</td>' for c, h in cells) + "</tr>")


#: The columns of a word's table: (heading, what it is, left-aligned).
RECORD_HEAD = [("site", "", True), ("units", "the probe's units and the site's width in them", True),
               ("positives", "positives in the train / test sample", False),
               ("AP", "the full probe's average precision on the test sample", False),
               ("AUROC", "the full probe's area under the ROC curve on the test sample", False),
               ("chance", "chance AP: the share of positives in the test sample", False),
               ("k95", DEFINITIONS["k95"], False), ("k99", "smallest k keeping 99% of the full probe's AP", False),
               ("rnd k95", "k95 of random units", False), ("rnd k99", "k99 of random units", False),
               ("top units (to k95)", f"the ranking's first units, best first (at most {TOP_UNITS})", True),
               ("best unit, AP", DEFINITIONS["best_single"], True),
               ("control, AP", "the control word: a random word type of the same corpus frequency (Hewitt and "
                               "Liang 2019), and its full probe's AP", True),
               ("selectivity", DEFINITIONS["selectivity"], False),
               ("FT k", "FT's smallest recovering k (neurotext encode, z-score units); never: no k recovered the word",
                False), ("FT \u2229 probe", DEFINITIONS["ft"], True)]


def _word_section(i: int, word: str, recs: list[dict], fts: dict, chips: Chips, unit_href) -> str:
    by: dict[tuple[int, str], dict[str, dict]] = {}
    for r in recs:
        by.setdefault((r["layer"], r["site"]), {})[r["units"]] = r
    first = recs[0]
    charts, rows = [], []
    for (layer, site), units in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ft = ft_of(units.get("neurons") or next(iter(units.values())), fts)
        charts.append(f'<figure class="apk"><figcaption>L{esc(layer)}.{esc(site)}</figcaption>'
                      + curve_svg(units, ft, f"average precision by k for {word!r} at L{layer}.{site}") + "</figure>")
        for u in UNITS:
            if u in units:
                rows.append(_record_row(units[u], ft_of(units[u], fts) if u == "neurons" else None, chips, unit_href))
    forms = " ".join(chips(t) for t in first.get("tokens") or [])
    head = "".join(f'<th class="{"l" if left else "num"}"' + (f' title="{esc(t)}"' if t else "") + f'>{esc(h)}</th>'
                   for h, t, left in RECORD_HEAD)
    return (f'<section class="q2word" id="w{i}"><h3><span class="word">{esc(word)}</span> '
            f'<span class="forms">{forms}</span> <span class="muted">{esc(first.get("occurrences_train", "?"))} train, '
            f'{esc(first.get("occurrences_test", "?"))} held-out occurrences</span></h3>'
            f'<div class="q2charts">{"".join(charts)}</div>'
            f'<div class="tablewrap"><table class="stats q2rec"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def settings_rows(records: list[dict], source, encode_source, fts_note: str | None) -> list[tuple[str, object]]:
    done = [r for r in records if "skipped" not in r]
    r0 = done[0] if done else {}
    s, p, tokens = r0.get("sampling") or {}, r0.get("probe") or {}, r0.get("corpus_tokens") or {}
    rows = [("model", r0.get("model", "?")), ("corpus", r0.get("corpus", "?")),
            ("text tokens (train / test)", f"{tokens.get('train', '?')} / {tokens.get('test', '?')}")]
    rows += [(k.replace("_", " "), s[k]) for k in ("negatives_per_positive", "test_negatives_per_positive",
                                                   "max_positives", "seed", "split_seed", "test_share", "max_length",
                                                   "max_tokens") if k in s]
    rows += [(f"probe {k.replace('_', ' ')}", p[k]) for k in ("alpha", "l1_ratio", "class_weight", "steps", "tol")
             if k in p]
    rows += [("probe results", str(source)), ("FT results", encode_source or fts_note or "none")]
    return rows


def page_body(records: list[dict], source, index_href: str = "index.html", encode: dict | None = None,
              encode_source=None, token_kind: str = PLAIN, unit_href=None) -> str:
    """The body of the Q2 page (:func:`neurotext.atlas.pages.q2_page`): the settings, the summary per layer and
    site, then per word its charts and its table, then the skipped words with their reasons.

    Args:
        records: the probe records (:func:`read_probe`).
        source: where they were read (shown).
        encode: the atlas's encode document (FT's rank at each k), or None; used only when it is of the probe's model.
        encode_source: where it was read.
        token_kind: how vocabulary strings are shown (:mod:`neurotext.model.tokens`).
        unit_href: a canonical unit name -> the URL of its page in the atlas, or None when it has none.
    """
    model = probe_model(records)
    note = None
    if encode is not None and not same_model(records, encode):
        note = f"{encode_source} is of the model {encode.get('model')}, not {model}: not shown beside the probe"
        encode, encode_source = None, None
    fts = ft_results(encode)
    chips = Chips(token_kind)
    done = [r for r in records if "skipped" not in r]
    words = words_of(records)
    skipped = [r for r in records if "skipped" in r]
    mismatch = [(r["word"], r["layer"]) for r in done
                if r["units"] == "neurons" and "encode_k" in (ft_of(r, fts) or {})]
    nav = (f'<nav class="crumbs"><a href="{esc(index_href)}">&larr; atlas index</a><span class="sep"></span>'
           '<a href="#summary">summary</a><span class="sep"></span><a href="#words">words</a>'
           + ('<span class="sep"></span><a href="#skipped">skipped</a>' if skipped else "") + '</nav>')
    r0 = done[0] if done else {}
    chance = (r0.get("sampling") or {}).get("test_negatives_per_positive")
    lead = ('<p class="lead">For each word, a binary probe &ldquo;the token at this position is the word&rdquo; over '
            'a site\'s units (neurons; a dictionary\'s features where the probe had them) is trained on the corpus\'s '
            'train part and scored on the held-out part: its average precision (AP) keeps the word apart from random '
            'positions. The units are ranked by the full probe\'s weights and the probe is retrained on the top k; '
            'k95 is the smallest k that keeps 95% of the full probe\'s AP, beside k random units (dashed) and a '
            'control word of the same frequency (the selectivity is the word\'s AP minus the control\'s). Feature '
            'textualization answers the same question from the vocabulary side (neurotext encode): the marks under '
            'each chart are the word\'s rank among the FT vector\'s nearest tokens at each k, the vertical line its '
            'smallest recovering k.</p>'
            + (f'<p class="note">Chance AP is about 1/{esc(1 + chance)}: the test sample holds {esc(chance)} random '
               f'positions per positive.</p>' if _int(chance) else ""))
    notes = "".join(f'<p class="note warn">{esc(n)}</p>' for n in (
        [note] if note else []) + ([f"FT's k in the probe results (its --encode) differs from the encode results here "
                                    f"for {len(mismatch)} word and layer pairs: "
                                    + ", ".join(f"{w!r} L{layer}" for w, layer in mismatch[:12])]
                                   if mismatch else []))
    word_links = " ".join(f'<a href="#w{i}">{esc(w)}</a>' for i, w in enumerate(words))
    sections = "".join(_word_section(i, w, [r for r in done if r["word"] == w], fts, chips, unit_href)
                       for i, w in enumerate(words))
    skipped_html = ""
    if skipped:
        skipped_html = ('<section id="skipped"><h2>Skipped words</h2><table class="stats skipped"><thead><tr>'
                        '<th>word</th><th>reason</th></tr></thead><tbody>'
                        + "".join(f'<tr><td class="word">{esc(r["word"])}</td><td>{esc(r["skipped"])}</td></tr>'
                                  for r in skipped) + '</tbody></table></section>')
    defs = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in DEFINITIONS.items())
    settings = "".join(f'<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>'
                       for k, v in settings_rows(records, source, encode_source, note))
    rule = (r0.get("sampling") or {}).get("rule")
    body = (f'{nav}<header><div class="brand">neurotext atlas &middot; {esc(model or "?")}</div>'
            f'<h1>Q2 on real text</h1><p class="lead">How many units does a word need? {len(words)} words'
            + (f', {len(skipped)} skipped' if skipped else "") + '.</p></header>'
            f'<main>{lead}{notes}<section id="summary"><h2>Per layer and site</h2>'
            f'{summary_table(summary_rows(records, fts))}</section>'
            f'<section id="settings" class="cols"><div><h2>Settings</h2><table class="kv">{settings}</table>'
            + (f'<p class="note">Sampling: {esc(rule)}.</p>' if rule else "") + '</div>'
            f'<div><h2>Definitions</h2><dl class="defs">{defs}</dl></div></section>'
            f'<section id="words"><h2>Words</h2><p class="wordlinks">{word_links}</p>{legend()}{sections}</section>'
            f'{skipped_html}</main>')
    return body
