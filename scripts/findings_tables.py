"""Print the findings tables of docs/findings/ (Markdown) from the documents the findings commands write.

    python scripts/findings_tables.py --words artifacts/findings/q1/words.json \
        --encode artifacts/findings/store/encode/encode.json
    python scripts/findings_tables.py --restarts artifacts/findings/smollm2   # restarts' activations (a store)
    python scripts/findings_tables.py --seeds artifacts/findings/smollm2 artifacts/findings/smollm2-seed1
    python scripts/findings_tables.py --corpus q1/words.json seed1=q1-seed1/words.json split1=q1-split1/words.json

Every number in the tables of the findings pages (docs/findings/*.md) comes from here, so the commands on
those pages regenerate them exactly.
"""

from __future__ import annotations

import argparse
import json


def _q(q: dict, spec: str = ".3f", brackets: bool = True) -> str:
    if not q or q.get("n", 0) == 0 or q.get("median") is None:
        return "n/a"
    if not brackets:
        return format(q["median"], spec)
    return f"{format(q['median'], spec)} [{format(q['q1'], spec)}, {format(q['q3'], spec)}]"


def q1_table(doc: dict, site: str = "ffn") -> str:
    lines = ["| layer | neurons | nearest-token cosine, FT | same, random control | retention, FT | overlap@10, FT "
             "| FT / best real token | word-like FT | word-like token control |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in doc["groups"]:
        if g["site"] != site:
            continue
        s = g["stats"]
        lines.append(
            f"| {g['layer']} | {g['n']} | {_q(s['nearest_cosine']['ft'])} "
            f"| {_q(s['nearest_cosine']['random'], brackets=False)} "
            f"| {_q(s['retention']['ft'])} | {_q(s['overlap_at_10']['ft'], '.1f', False)} "
            f"| {_q(s['activation_ratio']['ft'], '.1f')} | {g['n_word_like']['ft']} / {g['n']} "
            f"| {100 * g['word_like']['token']:.1f}% |")
    return "\n".join(lines)


def stability_table(doc: dict, site: str = "ffn") -> str:
    lines = ["| layer | neurons with 2+ counted restarts | Jaccard@10, restarts | Jaccard@10, chance "
             "| cosine, restarts | cosine, chance | consensus tokens, restarts | consensus tokens, chance "
             "| reproducible |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in doc["groups"]:
        st = g.get("stability")
        if g["site"] != site or not st:
            continue
        s = st["stats"]
        rep = "n/a" if st["reproducible"] is None else f"{100 * st['reproducible']:.1f}% ({st['n_reproducible']})"
        lines.append(
            f"| {g['layer']} | {st['n_with_two_restarts']} / {g['n']} | {_q(s['jaccard_at_10']['ft'])} "
            f"| {_q(s['jaccard_at_10']['baseline'])} | {_q(s['cosine']['ft'])} | {_q(s['cosine']['baseline'])} "
            f"| {_q(s['consensus_size']['ft'], '.0f')} | {_q(s['consensus_size']['baseline'], '.0f')} | {rep} |")
    return "\n".join(lines)


def q2_table(doc: dict) -> str:
    ks = doc["ks"]
    res = {(r["layer"], r["select"], r["k"]): r for r in doc["results"]}
    small = {(r["layer"], r["select"]): r for r in doc["smallest_k_summary"]}
    rand_ks = [k for k in (16, 64) if k in ks]
    head = ["layer"] + [f"k={k}" for k in ks] + [f"random k={k}" for k in rand_ks] + \
        ["smallest k (z-score), median [q1, q3]", "smallest k (random)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layer in doc["layers"]:
        cells = [str(layer)] + [f"{res[(layer, 'zscore', k)]['top1']:.2f}" for k in ks]
        cells += [f"{res[(layer, 'random', k)]['top1']:.2f}" for k in rand_ks]
        for sel in ("zscore", "random"):
            s = small.get((layer, sel))
            cells.append("n/a" if not s or s["median"] is None else f"{s['median']} [{s['q1']}, {s['q3']}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _quartiles(values) -> str:
    import statistics

    v = sorted(x for x in values if x == x)
    if not v:
        return "n/a"
    qs = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return f"{qs[1]:.3f} [{qs[0]:.3f}, {qs[2]:.3f}]"


def seeds_table(store_a: str, store_b: str, site: str = "ffn") -> str:
    """The same neurons swept with two seeds: per layer, how far the second seed's read-outs agree with the
    first's (Jaccard of the ten nearest tokens of the best optimum and of the centroid), the activation
    ratio of the two best optima, and each seed's median FT / best real token (medians [quartiles])."""
    import statistics

    from neurotext.store import read_table

    cols = ("neuron", "layer", "site", "activation", "best_activation", "nearest_ids", "centroid")
    a, b = ({r["neuron"]: r for r in read_table(s).select(list(cols)).to_pylist() if r["site"] == site}
            for s in (store_a, store_b))

    def jac(x, y):
        x, y = set(x), set(y)
        return len(x & y) / len(x | y) if x | y else float("nan")

    by: dict[int, list[tuple]] = {}
    for name in sorted(a.keys() & b.keys()):
        ra, rb = a[name], b[name]
        by.setdefault(ra["layer"], []).append((
            jac(ra["nearest_ids"], rb["nearest_ids"]),
            jac(ra["centroid"]["nearest_ids"], rb["centroid"]["nearest_ids"]),
            rb["activation"] / ra["activation"] if ra["activation"] > 0 else float("nan"),
            ra["activation"] / ra["best_activation"] if ra["best_activation"] > 0 else float("nan"),
            rb["activation"] / rb["best_activation"] if rb["best_activation"] > 0 else float("nan"),
        ))
    lines = ["| layer | neurons | Jaccard@10 across seeds, best optimum | same, centroid | activation, seed B / seed A "
             "| FT / best token, seed A | FT / best token, seed B |", "|---|---|---|---|---|---|---|"]
    for layer, v in sorted(by.items()):
        med = [statistics.median(x[i] for x in v if x[i] == x[i]) for i in (3, 4)]
        lines.append(f"| {layer} | {len(v)} | {_quartiles(x[0] for x in v)} | {_quartiles(x[1] for x in v)} "
                     f"| {_quartiles(x[2] for x in v)} | {med[0]:.1f} | {med[1]:.1f} |")
    return "\n".join(lines)


def restarts_table(store: str, site: str = "ffn") -> str:
    """Per layer, how high each neuron's restarts climb relative to its best one (medians [quartiles]):
    the second best, the worst, and the centroid read-out's activation, all over the best restart's; and
    the medians of the best restart's activation and of the best real token's."""
    import statistics

    from neurotext.store import read_table

    table = read_table(store)  # a store written before the centroid existed has no such column
    cols = ("layer", "site", "restarts_detail", "centroid", "best_activation")
    rows = table.select([c for c in cols if c in table.column_names]).to_pylist()
    by: dict[int, list[tuple[float, ...]]] = {}
    for r in rows:
        acts = sorted((d["activation"] for d in r["restarts_detail"]), reverse=True)
        if r["site"] != site or len(acts) < 2 or acts[0] <= 0:
            continue
        cent = (r.get("centroid") or {}).get("activation")
        by.setdefault(r["layer"], []).append((acts[1] / acts[0], acts[-1] / acts[0],
                                              float("nan") if cent is None else cent / acts[0],
                                              acts[0], r["best_activation"]))
    q = _quartiles
    lines = ["| layer | neurons | second-best restart / best | worst restart / best | centroid / best "
             "| best restart's activation | best real token's activation |", "|---|---|---|---|---|---|---|"]
    for layer, v in sorted(by.items()):
        med = [statistics.median(x[i] for x in v) for i in (3, 4)]
        lines.append(f"| {layer} | {len(v)} | {q(x[0] for x in v)} | {q(x[1] for x in v)} | {q(x[2] for x in v)} "
                     f"| {med[0]:.1f} | {med[1]:.2f} |")
    return "\n".join(lines)


READOUT_ORDER = ("ft_nearest", "ft_consensus", "ft_centroid", "ft_vector", "centroid_vector", "scan_best", "phrase",
                 "corpus_lookup")


def _scores(doc: dict, site: str) -> dict:
    """{(layer, readout): row} of the corpus arm's per-layer scores."""
    return {(r["layer"], r["readout"]): r for r in doc["corpus"]["corpus_scores"] if r["site"] == site}


def corpus_tables(doc: dict, site: str = "ffn") -> str:
    """The real-text arm: each read-out's score beside its chance level per layer, the token-identity share and
    the optimization ratios (median [quartiles])."""
    sc = _scores(doc, site)
    layers = sorted({layer for layer, _ in sc})
    names = [n for n in READOUT_ORDER if any((layer, n) in sc for layer in layers)]
    out = []
    for stat, title in (("correlation", "correlation with the activation"), ("detection_auroc", "detection AUROC")):
        lines = [f"{title}, median (chance median in brackets)", "",
                 "| layer | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for layer in layers:
            cells = []
            for n in names:
                r, c = sc.get((layer, n)), sc.get((layer, n + "_chance"))
                cells.append("n/a" if r is None else f"{_q(r[stat], '.3f', False)} ({_q(c[stat], '.3f', False)})")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    ti = [t for t in doc["corpus"]["token_identity"] if t["site"] == site]
    lines = ["token identity (omega squared by token id), median [quartiles]", "",
             "| layer | neurons | omega squared | labels permuted | share > 0.5 | FT word-like |",
             "|---|---|---|---|---|---|"]
    for t in ti:
        wl = t.get("word_like_ft")
        lines.append(f"| {t['layer']} | {t['n']} | {_q(t['omega_squared'])} | {_q(t['omega_squared_permuted'])} "
                     f"| {100 * (t['above_half'] or 0):.1f}% | {'n/a' if wl is None else f'{100 * wl:.1f}%'} |")
    out.append("\n".join(lines))
    opt = [o for o in doc["corpus"]["optimization"] if o["site"] == site]
    lengths = sorted({n for o in opt for n in o["phrase_over_corpus_max"]}, key=int)
    lines = ["optimization against real text: activation / corpus max, median [quartiles]", "",
             "| layer | FT vector | best real token | " + " | ".join(f"best phrase, {n}" for n in lengths) + " |",
             "|---" * (3 + len(lengths)) + "|"]
    for o in opt:
        lines.append(f"| {o['layer']} | {_q(o['ft_over_corpus_max'], '.2f')} "
                     f"| {_q(o['scan_best_over_corpus_max'], '.2f')} | "
                     + " | ".join(_q(o["phrase_over_corpus_max"].get(n), ".2f") for n in lengths) + " |")
    out.append("\n".join(lines))
    return "\n\n".join(out)


def corpus_variation(ref: dict, others: list[tuple[str, dict]], site: str = "ffn") -> str:
    """How far each per-layer median moves between the reference document and each variant (another FT seed,
    another split seed), over the neurons both hold (from the per-neuron records): the reference median and the
    variant's, and the largest absolute change over the layers."""
    import numpy as np

    def per_neuron(doc):
        return {n["neuron"]: n for n in doc["corpus"].get("neurons") or [] if n["site"] == site}

    refn = per_neuron(ref)
    lines = []
    for label, doc in others:
        var = per_neuron(doc)
        common = sorted(set(refn) & set(var))
        layers = sorted({refn[n]["layer"] for n in common})
        lines += [f"reference vs {label}: {len(common)} neurons in both", ""]

        def med(recs, readout, stat):
            v = [r["scores"].get(readout, {}).get(stat) for r in recs]
            v = [x for x in v if x is not None]
            return float(np.median(v)) if v else None

        for stat in ("correlation", "detection_auroc"):
            lines += [f"{stat}, median per layer (reference / {label})", "",
                      "| read-out | " + " | ".join(f"L{layer}" for layer in layers) + " | largest change |",
                      "|---" * (len(layers) + 2) + "|"]
            for name in READOUT_ORDER:
                for readout in (name, name + "_chance"):
                    cells, worst = [], 0.0
                    for layer in layers:
                        ns = [n for n in common if refn[n]["layer"] == layer]
                        a = med([refn[n] for n in ns], readout, stat)
                        b = med([var[n] for n in ns], readout, stat)
                        cells.append("n/a" if a is None or b is None else f"{a:.3f} / {b:.3f}")
                        if a is not None and b is not None:
                            worst = max(worst, abs(a - b))
                    if any(c != "n/a" for c in cells):
                        lines.append(f"| {readout} | " + " | ".join(cells) + f" | {worst:.3f} |")
            lines.append("")
        cells, worst = [], 0.0
        for layer in layers:
            ns = [n for n in common if refn[n]["layer"] == layer]
            a = [refn[n]["omega_squared"] for n in ns if refn[n]["omega_squared"] is not None]
            b = [var[n]["omega_squared"] for n in ns if var[n]["omega_squared"] is not None]
            if a and b:
                cells.append(f"L{layer} {np.median(a):.3f} / {np.median(b):.3f}")
                worst = max(worst, abs(float(np.median(a)) - float(np.median(b))))
        lines += [f"omega squared, median per layer (reference / {label}): " + "; ".join(cells)
                  + f"; largest change {worst:.3f}", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", help="words.json of neurotext words --out")
    ap.add_argument("--encode", help="encode.json of neurotext encode --out")
    ap.add_argument("--restarts", metavar="STORE", help="a sweep store: the restarts' activations per layer")
    ap.add_argument("--seeds", nargs=2, metavar=("STORE_A", "STORE_B"),
                    help="two stores of the same neurons swept with different seeds: cross-seed agreement")
    ap.add_argument("--corpus", nargs="+", metavar="WORDS_JSON",
                    help="words.json of neurotext words with corpus examples: the real-text tables of the first; "
                         "with more (label=path: another FT seed, another split seed), how far each median moves")
    ap.add_argument("--site", default="ffn")
    args = ap.parse_args(argv)
    if args.words:
        doc = json.load(open(args.words))
        print("Q1\n\n" + q1_table(doc, args.site) + "\n\nStability\n\n" + stability_table(doc, args.site) + "\n")
    if args.encode:
        print("Q2\n\n" + q2_table(json.load(open(args.encode))) + "\n")
    if args.restarts:
        print("Restarts\n\n" + restarts_table(args.restarts, args.site) + "\n")
    if args.seeds:
        print("Seeds\n\n" + seeds_table(*args.seeds, site=args.site) + "\n")
    if args.corpus:
        ref = json.load(open(args.corpus[0].split("=", 1)[-1]))
        print("Real text\n\n" + corpus_tables(ref, args.site) + "\n")
        if len(args.corpus) > 1:
            others = [(a.split("=", 1)[0] if "=" in a else a, json.load(open(a.split("=", 1)[-1])))
                      for a in args.corpus[1:]]
            print("Variation\n\n" + corpus_variation(ref, others, args.site) + "\n")


if __name__ == "__main__":
    main()
