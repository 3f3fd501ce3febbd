"""Figures of the atlas: Q1 distributions per layer and the Q2 recovery curve (matplotlib, Agg, PNG), and the
optimization curve of one neuron as a small inline SVG.

Every function takes plain numbers and writes or returns one figure; nothing here reads a store.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

#: Q1 panels: (store-derived key, title, y label, log scale, reference lines). Keys are those of
#: :func:`neurotext.report.q1_columns`.
Q1_PANELS = (
    ("nearest_cosine", "FT vector vs its nearest token", "cosine", False, (1.0,)),
    ("retention", "Retention (symbolization)", "nearest-token activation / FT activation", False, (0.0, 1.0)),
    ("overlap_at_10", "Overlap of FT nearest and best real tokens", "overlap@10", False, ()),
    ("act_ratio", "FT activation vs best real token", "FT activation / best-token activation (log)", True, (1.0,)),
)
SITE_COLORS = {"ffn": "#3b6fd4", "out": "#d9822b"}
WHISKERS = (5, 95)  # box-plot whiskers: percentiles (outliers are not drawn)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.text(0.5, 0.005, f"boxes: quartiles and median; whiskers: {WHISKERS[0]}th-{WHISKERS[1]}th percentile; "
             "dot: mean; dotted: reference values", ha="center", fontsize=8, color="#666666")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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
    styles = {"zscore": "-", "random": "--"}
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
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_ylabel(f"share of words{f' ({site})' if site else ''}")
    handles = [plt.Line2D([], [], color=colors[layer], linewidth=2, label=f"L{layer}") for layer in layers]
    handles += [plt.Line2D([], [], color="#444444", linestyle=s, label=f"{sel} selection") for sel, s in styles.items()]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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
