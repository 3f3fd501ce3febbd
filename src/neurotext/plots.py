"""PNG figures for the analyses (Q1 ``words``, Q2 ``encode``).

Figures are built on matplotlib's object API with the Agg canvas, never through pyplot, so no global
backend or figure state is touched and nothing needs a display.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


_LINESTYLES = {"zscore": "-", "random": "--", "zhigh": ":"}


def plot_encode(doc: dict, path) -> Path:
    """Q2 recovery curves: share of words at rank 1 (left) and within the top 10 (right) versus k,
    one colour per layer; z-score selection solid, the random control dashed."""
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    colors = {layer: f"C{i % 10}" for i, layer in enumerate(doc["layers"])}
    for ax, metric, title in ((axes[0], "top1", "recovered at rank 1"),
                              (axes[1], "top10", "within the 10 nearest tokens")):
        for layer in doc["layers"]:
            for s in doc["select"]:
                rows = sorted((r for r in doc["results"] if r["layer"] == layer and r["select"] == s),
                              key=lambda r: r["k"])
                if not rows:
                    continue
                ax.plot([r["k"] for r in rows], [r[metric] for r in rows], marker="o", markersize=3,
                        linestyle=_LINESTYLES.get(s, "-."), color=colors[layer], label=f"L{layer} {s}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(doc["ks"], [str(k) for k in doc["ks"]], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("k (units selected)")
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"share of {len(doc['words'])} words")
    axes[1].legend(fontsize=7, ncol=2, loc="lower right")
    fig.suptitle(f"Q2: words recovered by FT on k units — {doc['model']}, {doc['site']}, {doc['objective']} "
                 f"objective", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


_SOURCE_COLORS = {"ft": "C0", "token": "C2", "random": "C7"}


def plot_words_stat(result, stat: str, path) -> Path:
    """Q1: box plots of one statistic per layer (one panel per site), the FT vectors beside the token and
    random controls."""
    from .stats import finite
    from .words import SOURCES, STATS

    sites = sorted({g.site for g in result.groups})
    fig = _figure(max(6.0, 1.6 + 1.1 * max(len([g for g in result.groups if g.site == s]) for s in sites)),
                  3.6 * len(sites))
    axes = fig.subplots(len(sites), 1, squeeze=False)[:, 0]
    width = 0.8 / len(SOURCES)
    for ax, site in zip(axes, sites):
        groups = [g for g in result.groups if g.site == site]
        for j, src in enumerate(SOURCES):
            data, pos = [], []
            for i, g in enumerate(groups):
                v = finite(g.values[src][stat])
                if v.size:
                    data.append(v)
                    pos.append(i + (j - (len(SOURCES) - 1) / 2) * width)
            if not data:
                continue
            bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False,
                            manage_ticks=False)
            for box in bp["boxes"]:
                box.set_facecolor(_SOURCE_COLORS[src])
                box.set_alpha(0.6)
            for med in bp["medians"]:  # opaque, in the source's colour: a constant control stays visible
                med.set_color(_SOURCE_COLORS[src])
                med.set_linewidth(2.5)
            ax.plot([], [], color=_SOURCE_COLORS[src], linewidth=6, alpha=0.6, label=src if src == "ft" else
                    f"{src} control")
        ax.set_xticks(range(len(groups)), [f"L{g.layer}\nn={len(g.neurons)}" for g in groups], fontsize=8)
        ax.set_ylabel(f"{site}: {stat}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(textwrap.fill(f"Q1 {result.model}: {stat} = {STATS[stat]}", 100), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_word_like(doc: dict, path) -> Path:
    """Q1: share of word-like neurons per layer (one panel per site), FT beside both controls."""
    from .words import SOURCES

    sites = sorted({g["site"] for g in doc["groups"]})
    fig = _figure(7, 3.4 * len(sites))
    axes = fig.subplots(len(sites), 1, squeeze=False)[:, 0]
    width = 0.8 / len(SOURCES)
    for ax, site in zip(axes, sites):
        groups = [g for g in doc["groups"] if g["site"] == site]
        for j, src in enumerate(SOURCES):
            xs = [i + (j - (len(SOURCES) - 1) / 2) * width for i in range(len(groups))]
            ax.bar(xs, [g["word_like"][src] or 0.0 for g in groups], width=width * 0.9,
                   color=_SOURCE_COLORS[src], alpha=0.8, label=src if src == "ft" else f"{src} control")
        ax.set_xticks(range(len(groups)), [f"L{g['layer']}" for g in groups])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{site}: share word-like")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Q1: word-like neurons — {doc['criterion']['text']}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
