"""Figures of the atlas and the analyses: Q1 distributions per layer (with the controls of ``neurotext
words``) and the Q2 recovery curve (matplotlib, Agg, PNG). The optimization curve of one neuron, a small
inline SVG, is drawn by :func:`neurotext.display.card.curve_svg` with the rest of a neuron's card.

Every function takes plain numbers and writes or returns one figure; nothing here reads a store.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

#: Q1 panels: (store-derived key, title, y label, log scale, reference lines). Keys are those of
#: :func:`neurotext.atlas.report.q1_columns`.
Q1_PANELS = (
    ("nearest_cosine", "FT vector vs its nearest token", "cosine", False, (1.0,)),
    ("retention", "Retention (symbolization)", "nearest-token activation / FT activation", False, (0.0, 1.0)),
    ("overlap_at_10", "Overlap of FT nearest and best real tokens", "overlap@10", False, ()),
    ("act_ratio", "FT activation vs best real token", "FT activation / best-token activation (log)", True, (1.0,)),
)
SITE_COLORS = {"ffn": "#3b6fd4", "out": "#d9822b", "ffn.f": "#2a9d5c", "out.f": "#b5489a"}  # features: their own
WHISKERS = (5, 95)  # box-plot whiskers: percentiles (outliers are not drawn)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _despine(ax) -> None:
    """Hide the top and right frame lines of an axis (every figure here uses the same look)."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _save(plt, fig, path: Path, rect=(0, 0, 1, 1)) -> Path:
    """Lay out ``fig`` within ``rect``, write it to ``path`` and free it."""
    fig.tight_layout(rect=rect)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def q1_figure(columns: dict[str, dict[tuple[int, str], np.ndarray]], path: Path) -> Path:
    """Box plots per layer (and site) of the four Q1 statistics; writes a PNG to ``path``.

    Args:
        columns: ``{panel key: {(layer, site): finite values}}``.
        path: output file.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.6), dpi=100)
    for ax, (key, title, ylabel, log, refs) in zip(axes.flat, Q1_PANELS):
        groups = columns.get(key, {})
        layers = sorted({layer for layer, _ in groups})
        sites = sorted({site for _, site in groups})
        width = 0.7 / max(len(sites), 1)
        for j, site in enumerate(sites):
            keys = [(layer, site) for layer in layers if len(groups.get((layer, site), ())) > 0]
            if not keys:
                continue
            pos = [layer + (j - (len(sites) - 1) / 2) * width for layer, _ in keys]
            color = SITE_COLORS.get(site, "#666666")
            ax.boxplot([groups[k] for k in keys], positions=pos, widths=width * 0.85, whis=WHISKERS,
                       showfliers=False, showmeans=True, patch_artist=True,
                       boxprops=dict(facecolor=color + "55", edgecolor=color),
                       medianprops=dict(color=color, linewidth=2), whiskerprops=dict(color=color),
                       capprops=dict(color=color),
                       meanprops=dict(marker="o", markersize=3.5, markerfacecolor="white", markeredgecolor=color))
            ax.plot([], [], color=color, linewidth=6, alpha=0.5, label=site)
        for r in refs:
            ax.axhline(r, color="#999999", linewidth=0.8, linestyle=":", zorder=0)
        if log:
            ax.set_yscale("log")
        ax.set_xticks(layers, [f"L{layer}" for layer in layers])
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(axis="y", alpha=0.25)
        if not layers:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#999999")
        elif len(sites) > 1:
            ax.legend(fontsize=8, frameon=False)
        _despine(ax)
    fig.text(0.5, 0.005, f"boxes: quartiles and median; whiskers: {WHISKERS[0]}th-{WHISKERS[1]}th percentile; "
             "dot: mean; dotted: reference values", ha="center", fontsize=8, color="#666666")
    return _save(plt, fig, path, (0, 0.02, 1, 1))


def q2_figure(results: list[dict], path: Path, site: str | None = None) -> Path:
    """Recovery curves of Q2: share of words recovered (top-1 and top-10) versus k, log2 axis.

    One colour per layer; z-score selection solid, random selection (the control) dashed.

    Args:
        results: ``[{"layer", "select", "k", "top1", "top10"}, ...]`` from ``neurotext encode``.
        path: output PNG.
        site: shown in the title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    layers = sorted({int(r["layer"]) for r in results})
    cmap = plt.get_cmap("viridis")
    colors = {layer: cmap(i / max(len(layers) - 1, 1) * 0.9) for i, layer in enumerate(layers)}
    styles = {sel: style for sel, style in (("zscore", "-"), ("random", "--"), ("zhigh", ":"))
              if any(r["select"] == sel for r in results)}
    for ax, metric, title in zip(axes, ("top1", "top10"), ("word at rank 1", "word within the top 10")):
        for layer in layers:
            for select, style in styles.items():
                pts = sorted((int(r["k"]), float(r[metric])) for r in results
                             if int(r["layer"]) == layer and r["select"] == select and r.get(metric) is not None)
                if pts:
                    ax.plot([k for k, _ in pts], [v for _, v in pts], style, color=colors[layer], marker="o",
                            markersize=3, linewidth=1.6 if select == "zscore" else 1.1)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("k (units selected)")
        ax.set_title(f"Share of words recovered: {title}", fontsize=11)
        ax.grid(alpha=0.25)
        _despine(ax)
    axes[0].set_ylabel(f"share of words{f' ({site})' if site else ''}")
    handles = [plt.Line2D([], [], color=colors[layer], linewidth=2, label=f"L{layer}") for layer in layers]
    handles += [plt.Line2D([], [], color="#444444", linestyle=s, label=f"{sel} selection") for sel, s in styles.items()]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    return _save(plt, fig, path, (0, 0, 0.88, 1))


# --------------------------------------------------------------------------- neurotext words (Q1 with controls)
SOURCE_COLORS = {"ft": "#3b6fd4", "token": "#2e9e4f", "random": "#888888"}


def _source_label(src: str) -> str:
    return "FT" if src == "ft" else f"{src} control"


def words_stat_figure(groups, stat: str, title: str, path: Path) -> Path:
    """Q1 with controls: box plots of one statistic per layer (one panel per site), the FT vectors beside
    the token and random controls.

    Args:
        groups: :class:`neurotext.analysis.words.Group` list (``values[source][stat]`` per neuron).
        stat: the statistic.
        title: figure title.
        path: output PNG.

    Returns:
        ``path``.
    """
    from .stats import finite

    plt = _pyplot()
    sites = sorted({g.site for g in groups})
    n_layers = max(len([g for g in groups if g.site == s]) for s in sites)
    fig, axes = plt.subplots(len(sites), 1, figsize=(max(6.0, 1.6 + 1.1 * n_layers), 3.6 * len(sites)), dpi=100,
                             squeeze=False)
    width = 0.8 / len(SOURCE_COLORS)
    for ax, site in zip(axes[:, 0], sites):
        row = [g for g in groups if g.site == site]
        for j, (src, color) in enumerate(SOURCE_COLORS.items()):
            data, pos = [], []
            for i, g in enumerate(row):
                v = finite(g.values[src][stat])
                if v.size:
                    data.append(v)
                    pos.append(i + (j - (len(SOURCE_COLORS) - 1) / 2) * width)
            if data:  # the median line is opaque in the source's colour: a constant control stays visible
                ax.boxplot(data, positions=pos, widths=width * 0.9, whis=WHISKERS, showfliers=False,
                           patch_artist=True, manage_ticks=False,
                           boxprops=dict(facecolor=color + "88", edgecolor=color),
                           medianprops=dict(color=color, linewidth=2.5), whiskerprops=dict(color=color),
                           capprops=dict(color=color))
            ax.plot([], [], color=color, linewidth=6, alpha=0.6, label=_source_label(src))
        ax.set_xticks(range(len(row)), [f"L{g.layer}\nn={len(g.neurons)}" for g in row], fontsize=8)
        ax.set_ylabel(f"{site}: {stat}")
        ax.grid(axis="y", alpha=0.25)
        ax.legend(fontsize=7, frameon=False)
        _despine(ax)
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    fig.text(0.5, 0.005, f"boxes: quartiles and median; whiskers: {WHISKERS[0]}th-{WHISKERS[1]}th percentile",
             ha="center", fontsize=7, color="#666666")
    return _save(plt, fig, path, (0, 0.02, 1, 1))


def _site_panels(groups: list[dict]):
    """One panel per site, stacked: (pyplot, figure, [(axis, site, the site's groups)])."""
    plt = _pyplot()
    sites = sorted({g["site"] for g in groups})
    fig, axes = plt.subplots(len(sites), 1, figsize=(7, 3.4 * len(sites)), dpi=100, squeeze=False)
    return plt, fig, [(ax, site, [g for g in groups if g["site"] == site]) for ax, site in zip(axes[:, 0], sites)]


def word_like_figure(groups: list[dict], title: str, path: Path) -> Path:
    """Q1: share of word-like neurons per layer (one panel per site), FT beside both controls.

    Args:
        groups: the ``groups`` of the ``neurotext words`` document (``layer``, ``site``, ``word_like``).
        title: figure title (the criterion).
        path: output PNG.

    Returns:
        ``path``.
    """
    plt, fig, panels = _site_panels(groups)
    width = 0.8 / len(SOURCE_COLORS)
    for ax, site, row in panels:
        for j, (src, color) in enumerate(SOURCE_COLORS.items()):
            xs = [i + (j - (len(SOURCE_COLORS) - 1) / 2) * width for i in range(len(row))]
            ax.bar(xs, [g["word_like"][src] or 0.0 for g in row], width=width * 0.9, color=color,
                   label=_source_label(src))
        ax.set_xticks(range(len(row)), [f"L{g['layer']}" for g in row])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{site}: share word-like")
        ax.grid(axis="y", alpha=0.25)
        ax.legend(fontsize=7, frameon=False)
        _despine(ax)
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    return _save(plt, fig, path)


STABILITY_PANELS = (
    ("jaccard_at_10", "restarts' top-10 nearest tokens: mean pairwise Jaccard"),
    ("cosine", "restarts' FT vectors: mean pairwise cosine"),
)


def stability_figure(groups: list[dict], title: str, path: Path) -> Path:
    """Stability arm of Q1: per layer, box plots of the restarts' agreement (FT) beside the chance baseline
    (optima of different neurons), one row per site, one column per measure; the reproducible share on top.

    Args:
        groups: :func:`neurotext.analysis.reproducible.analyze` output.
        title: figure title.
        path: output PNG.

    Returns:
        ``path``.
    """
    from .stats import finite

    plt = _pyplot()
    sites = sorted({g["site"] for g in groups})
    n_layers = max(len([g for g in groups if g["site"] == s]) for s in sites)
    fig, axes = plt.subplots(len(sites), len(STABILITY_PANELS), squeeze=False, dpi=100,
                             figsize=(max(9.0, 2.0 + 2.0 * n_layers), 3.6 * len(sites)))
    colors = {"ft": SOURCE_COLORS["ft"], "baseline": SOURCE_COLORS["random"]}
    labels = {"ft": "restarts of one neuron", "baseline": "chance: different neurons"}
    width = 0.36
    for r, site in enumerate(sites):
        row = [g for g in groups if g["site"] == site]
        for c, (stat, ylabel) in enumerate(STABILITY_PANELS):
            ax = axes[r, c]
            for j, (src, color) in enumerate(colors.items()):
                data, pos = [], []
                for i, g in enumerate(row):
                    v = finite(g[src][stat])
                    if v.size:
                        data.append(v)
                        pos.append(i + (j - 0.5) * width)
                if data:
                    ax.boxplot(data, positions=pos, widths=width * 0.9, whis=WHISKERS, showfliers=False,
                               patch_artist=True, manage_ticks=False,
                               boxprops=dict(facecolor=color + "88", edgecolor=color),
                               medianprops=dict(color=color, linewidth=2.5), whiskerprops=dict(color=color),
                               capprops=dict(color=color))
                ax.plot([], [], color=color, linewidth=6, alpha=0.6, label=labels[src])
            ticks = []
            for g in row:
                rep = g["reproducible"]  # share over all neurons, as in the words table
                frac = f"{100 * sum(rep) / len(rep):.0f}%" if rep else "n/a"
                ticks.append(f"L{g['layer']}\nrepr. {frac}")
            ax.set_xticks(range(len(row)), ticks, fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(f"{site}: {stat}", fontsize=8)
            ax.set_title(ylabel, fontsize=8)
            ax.grid(axis="y", alpha=0.25)
            ax.legend(fontsize=7, frameon=False)
            _despine(ax)
    fig.suptitle(textwrap.fill(title, 110), fontsize=8)
    fig.text(0.5, 0.005, f"boxes: quartiles and median; whiskers: {WHISKERS[0]}th-{WHISKERS[1]}th percentile; "
             "repr.: share of neurons whose restarts agree above the baseline's 95th percentile",
             ha="center", fontsize=7, color="#666666")
    return _save(plt, fig, path, (0, 0.03, 1, 1))


def phrase_figure(groups: list[dict], stat: str, title: str, ylabel: str, path: Path) -> Path:
    """Q1 real-text arm: per layer (one panel per site) the median and quartiles of a phrase ratio, one line
    per phrase length.

    Args:
        groups: the ``phrases.groups`` of the ``neurotext words`` document (``layer``, ``site``,
            ``stats[stat][length]`` quartiles).
        stat: ``over_ft`` or ``over_token``.
        title, ylabel: labels.
        path: output PNG.

    Returns:
        ``path``.
    """
    plt, fig, panels = _site_panels(groups)
    lengths = sorted({int(n) for g in groups for n in g["stats"][stat]})
    cmap = plt.get_cmap("viridis")
    for ax, site, row in panels:
        for j, n in enumerate(lengths):
            color = cmap(j / max(1, len(lengths) - 1) * 0.85)
            pts = [(g["layer"], g["stats"][stat].get(str(n))) for g in row]
            pts = [(x, q) for x, q in pts if q and q["n"]]
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ax.fill_between(xs, [q["q1"] for _, q in pts], [q["q3"] for _, q in pts], color=color, alpha=0.15)
            ax.plot(xs, [q["median"] for _, q in pts], marker="o", color=color, label=f"{n} token{'s' * (n > 1)}")
        ax.axhline(1.0, color="#999999", linewidth=0.8, linestyle=":")
        ax.set_xticks([g["layer"] for g in row], [f"L{g['layer']}" for g in row])
        ax.set_ylabel(f"{site}: {ylabel}")
        ax.grid(axis="y", alpha=0.25)
        ax.legend(fontsize=7, frameon=False)
        _despine(ax)
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    fig.text(0.5, 0.005, "line: median; band: quartiles", ha="center", fontsize=7, color="#666666")
    return _save(plt, fig, path, (0, 0.02, 1, 1))


#: Colours of the read-outs scored on real text (the corpus lookup table, the reference, in black).
READOUT_COLORS = {"ft_nearest": "#3b6fd4", "ft_consensus": "#7a4fc9", "ft_centroid": "#2f9fa8",
                  "ft_vector": "#8fb3f0", "centroid_vector": "#9fd3d8", "scan_best": "#d9822b", "phrase": "#c94f7c",
                  "corpus_lookup": "#222222"}


def corpus_scores_figure(scores: list[dict], stat: str, title: str, path: Path) -> Path:
    """Real text: per layer (one panel per site) the median and quartiles of one score for every read-out
    (filled markers), beside its chance level (the same read-out of another neuron: hollow markers, dotted).

    Args:
        scores: ``corpus.corpus_scores`` of the ``neurotext words`` document.
        stat: ``correlation`` or ``detection_auroc``.
        title: figure title.
        path: output PNG.

    Returns:
        ``path``.
    """
    groups = [{"layer": layer, "site": site} for layer, site in sorted({(r["layer"], r["site"]) for r in scores})]
    plt, fig, panels = _site_panels(groups)
    names = [n for n in READOUT_COLORS if any(r["readout"] == n for r in scores)]
    width = 0.8 / max(1, len(names))
    for ax, site, row in panels:
        layers = [g["layer"] for g in row]
        for j, name in enumerate(names):
            color = READOUT_COLORS[name]
            for chance in (False, True):
                label = name + ("_chance" if chance else "")
                by_layer = {r["layer"]: r[stat] for r in scores if r["site"] == site and r["readout"] == label}
                pts = [(i, by_layer.get(layer)) for i, layer in enumerate(layers)]
                pts = [(i, q) for i, q in pts if q and q["n"]]
                if not pts:
                    continue
                xs = [i + (j - (len(names) - 1) / 2) * width + (0.25 * width if chance else 0) for i, _ in pts]
                med = [q["median"] for _, q in pts]
                err = [[m - q["q1"] for m, (_, q) in zip(med, pts)], [q["q3"] - m for m, (_, q) in zip(med, pts)]]
                ax.errorbar(xs, med, yerr=err, fmt="o", markersize=4, color=color, elinewidth=0.8,
                            mfc="white" if chance else color, linestyle="none", alpha=0.7 if chance else 1.0,
                            label=None if chance else name)
        ax.axhline(0.5 if stat == "detection_auroc" else 0.0, color="#999999", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(len(layers)), [f"L{x}" for x in layers])
        ax.set_ylabel(f"{site}: {stat.replace('_', ' ')}")
        ax.grid(axis="y", alpha=0.25)
        ax.legend(fontsize=6, frameon=False, ncol=4)
        _despine(ax)
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    fig.text(0.5, 0.005, "marker: median; bar: quartiles; hollow: chance (the same read-out of another neuron)",
             ha="center", fontsize=7, color="#666666")
    return _save(plt, fig, path, (0, 0.02, 1, 1))


def _median_band(ax, pts: list, color, label: str, alpha: float) -> None:
    """A line of medians over a band of quartiles, at (layer, {"median", "q1", "q3"}) points (none: nothing)."""
    if pts:
        xs = [x for x, _ in pts]
        ax.fill_between(xs, [q["q1"] for _, q in pts], [q["q3"] for _, q in pts], color=color, alpha=alpha)
        ax.plot(xs, [q["median"] for _, q in pts], marker="o", color=color, label=label)


def _layer_axis(ax, xs: list, ylabel: str) -> None:
    """Layers on x, a dotted line at 1, the y label, a legend: the real-text figures' common frame."""
    ax.axhline(1.0, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xticks(xs, [f"L{x}" for x in xs])
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.25)
    ax.legend(fontsize=7, frameon=False)
    _despine(ax)


def token_identity_figure(groups: list[dict], title: str, path: Path) -> Path:
    """Real text: per layer the omega squared of the activation by token id (median, quartiles) beside the same
    with the token labels permuted. ``groups``: ``corpus.token_identity`` of the words document."""
    plt, fig, panels = _site_panels(groups)
    for ax, site, row in panels:
        xs = [g["layer"] for g in row]
        for key, color, label in (("omega_squared", SITE_COLORS.get(site, "#3b6fd4"), "token identity"),
                                  ("omega_squared_permuted", "#999999", "token labels permuted (chance)")):
            _median_band(ax, [(x, g[key]) for x, g in zip(xs, row) if g[key]["n"]], color, label, 0.15)
        ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
        _layer_axis(ax, xs, f"{site}: omega squared")
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    fig.text(0.5, 0.005, "line: median; band: quartiles; 1 = the token alone determines the activation",
             ha="center", fontsize=7, color="#666666")
    return _save(plt, fig, path, (0, 0.02, 1, 1))


def optimization_figure(groups: list[dict], title: str, path: Path) -> Path:
    """Real text: per layer, FT activation, the best real token and the best real phrases over the corpus
    maximum (median, quartiles; log scale). ``groups``: ``corpus.optimization`` of the words document."""
    plt, fig, panels = _site_panels(groups)
    lengths = sorted({n for g in groups for n in g["phrase_over_corpus_max"]}, key=int)
    cmap = plt.get_cmap("viridis")
    for ax, site, row in panels:
        xs = [g["layer"] for g in row]
        series = [("FT vector", "#3b6fd4", [g["ft_over_corpus_max"] for g in row]),
                  ("best real token", "#d9822b", [g["scan_best_over_corpus_max"] for g in row])]
        series += [(f"best phrase, {n} tokens", cmap(0.3 + 0.6 * j / max(1, len(lengths) - 1)),
                    [g["phrase_over_corpus_max"].get(n) for g in row]) for j, n in enumerate(lengths)]
        for label, color, qs in series:
            _median_band(ax, [(x, q) for x, q in zip(xs, qs) if q and q["n"] and q["q1"] > 0], color, label, 0.12)
        ax.set_yscale("log")
        _layer_axis(ax, xs, f"{site}: activation / corpus max")
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    fig.text(0.5, 0.005, "line: median; band: quartiles; 1 = the highest activation found in the corpus",
             ha="center", fontsize=7, color="#666666")
    return _save(plt, fig, path, (0, 0.02, 1, 1))


# --------------------------------------------------------------------------- neurotext probe (Q2 on real text)
PROBE_COLORS = {"probe, neurons": "#3b6fd4", "random neurons": "#888888", "probe, features": "#2a9d5c",
                "FT (encode)": "#c0392b", "neurons, ranked": "#3b6fd4", "neurons, random": "#888888",
                "features, ranked": "#2a9d5c", "features, random": "#8fd1ab"}


def probe_summary_figure(groups: list[dict], path: Path, title: str) -> Path:
    """Q2 on real text, per layer: the median and quartiles over words of the smallest k keeping 95% of the full
    probe's average precision (ranked neurons, random neurons, features) beside FT's smallest recovering k.

    Args:
        groups: ``[{"site", "layer", "series": {label: quartiles of k}}]``
            (:func:`neurotext.analysis.probe.summary_groups`).
    """
    plt = _pyplot()
    sites = sorted({g["site"] for g in groups})
    fig, axes = plt.subplots(1, len(sites), figsize=(5.5 * len(sites), 4), dpi=100, squeeze=False)
    for ax, site in zip(axes[0], sites):
        row = [g for g in groups if g["site"] == site]
        labels = [lab for lab in PROBE_COLORS if any(lab in g["series"] for g in row)]
        for label in labels:
            pts = [(g["layer"], g["series"][label]) for g in row if g["series"].get(label, {}).get("n")]
            _median_band(ax, pts, PROBE_COLORS[label], label, 0.15)
        xs = [g["layer"] for g in row]
        ax.set_yscale("log", base=2)
        ax.set_xticks(xs, [f"L{x}" for x in xs])
        ax.set_ylabel(f"{site}: smallest k (95% of the full AP; FT: recovered)")
        ax.grid(axis="y", alpha=0.25)
        ax.legend(fontsize=7, frameon=False)
        _despine(ax)
    fig.suptitle(textwrap.fill(title, 100), fontsize=8)
    fig.text(0.5, 0.005, "line: median over words; band: quartiles", ha="center", fontsize=7, color="#666666")
    return _save(plt, fig, path, (0, 0.02, 1, 1))


def probe_curves_figure(curves: list[dict], path: Path, title: str) -> Path:
    """One panel per word: the probe's test AP over the full probe's versus k (log2), ranked and random units,
    neurons and features, a dotted line at 0.95 and FT's smallest recovering k as a vertical line.

    Args:
        curves: ``[{"word", "series": {label: [(k, ratio)]}, "ft_k"}]`` (:func:`neurotext.analysis.probe.curve_groups`).
    """
    plt = _pyplot()
    n = max(len(curves), 1)
    cols = min(n, 10)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols + 1.5, 1.6 * rows + 0.8), dpi=100, squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, c in zip(axes.flat, curves):
        for label, pts in c["series"].items():
            pts = sorted((k, v) for k, v in pts if v is not None and np.isfinite(v))
            if pts:
                ax.plot([k for k, _ in pts], [v for _, v in pts], "--" if "random" in label else "-",
                        color=PROBE_COLORS.get(label, "#444444"), linewidth=1.1, marker="o", markersize=1.8)
        ax.axhline(0.95, color="#999999", linewidth=0.7, linestyle=":")
        if c.get("ft_k"):
            ax.axvline(c["ft_k"], color=PROBE_COLORS["FT (encode)"], linewidth=1.0, linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_title(c["word"], fontsize=8)
        ax.tick_params(labelsize=6)
        _despine(ax)
    labels = sorted({lab for c in curves for lab in c["series"]})
    handles = [plt.Line2D([], [], color=PROBE_COLORS.get(lab, "#444444"), linestyle="--" if "random" in lab else "-",
                          label=lab) for lab in labels]
    if any(c.get("ft_k") for c in curves):
        handles.append(plt.Line2D([], [], color=PROBE_COLORS["FT (encode)"], linestyle=":",
                                  label="FT's smallest recovering k"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(textwrap.fill(title + " (x: k units, log2; y: test AP / full probe's AP)", 120), fontsize=9)
    return _save(plt, fig, path, (0, 0.04, 1, 1))
