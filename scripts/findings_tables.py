"""Print the findings tables of docs/findings/ (Markdown) from the documents the findings commands write.

    python scripts/findings_tables.py --words artifacts/findings/q1/words.json \
        --encode artifacts/findings/store/encode/encode.json
    python scripts/findings_tables.py --restarts artifacts/findings/smollm2   # restarts' activations (a store)
    python scripts/findings_tables.py --seeds artifacts/findings/smollm2 artifacts/findings/smollm2-seed1
    python scripts/findings_tables.py --corpus q1/words.json seed1=q1-seed1/words.json split1=q1-split1/words.json
    python scripts/findings_tables.py --features features/words.json --store features/store \
        --dictionaries features/dict-s0                              # features beside the neurons of their site
    python scripts/findings_tables.py --match features/dict-s0 features/dict-s1   # two dictionary seeds
    python scripts/findings_tables.py --probe probe/split0/probe.json split1=probe/split1/probe.json   # Q2, real text
    python scripts/findings_tables.py --probe probe/features/probe.json +probe/split0/probe.json   # beside neurons

Every number in the tables of the findings pages (docs/findings/*.md) comes from here, so the commands on
those pages regenerate them exactly.
"""

from __future__ import annotations

import argparse
import json
import math


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


# --------------------------------------------------------------------------- dictionary features
def _dictionary_manifests(folder: str) -> dict:
    """{site: neurotext.json} of the dictionaries under a folder (one subfolder each)."""
    from pathlib import Path

    out = {}
    for p in sorted(Path(folder).iterdir()):
        f = p / "neurotext.json"
        if f.is_file():
            m = json.loads(f.read_text())
            out[m["site"]] = m
    return out


def dictionary_table(folder: str) -> str:
    """Each dictionary's settings, training time and held-out quality (its neurotext.json)."""
    lines = ["| site | features | k | training tokens | minutes | held-out tokens | FVU | L0 | dead | dense "
             "| downstream, reconstruction | downstream, zero-ablation |", "|---" * 12 + "|"]
    for site, m in _dictionary_manifests(folder).items():
        ev = m["eval"]
        ds = ev.get("downstream") or {}
        if ds.get("kind") == "ce_recovered":  # decoders: next-token cross-entropy (clean beside it), loss recovered
            rec = f"CE {_fmt3(ds['ce_recon'])} (clean {_fmt3(ds['ce_clean'])}; recovered {_fmt3(ds['ce_recovered'])})"
            zero = f"CE {_fmt3(ds['ce_zero'])}"
        else:  # encoders: cosine of the mean-pooled last hidden states to the clean ones
            cr, cz = ds.get("cosine_recon"), ds.get("cosine_zero")
            share = "" if cr is None or cz is None or cz >= 1 else f"; recovered {(cr - cz) / (1 - cz):.2f}"
            rec, zero = f"cosine {_fmt3(cr)}{share}", f"cosine {_fmt3(cz)}"
        lines.append(f"| {site} | {m['width']} | {m['settings'].get('k')} | {m['tokens']:,} | {m['seconds'] / 60:.1f} "
                     f"| {ev['tokens']:,} | {ev['fvu']:.3f} | {ev['l0']:.1f} | {100 * ev['dead_share']:.1f}% "
                     f"| {100 * ev['dense_share']:.1f}% | {rec} | {zero} |")
    return "\n".join(lines)


def _fmt3(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def features_table(doc: dict, neurons: str = "ffn", features: str = "ffn.f") -> str:
    """Neurons and the features of their site side by side, per layer, on the same held-out text: token identity,
    FT's word-like share, restart agreement against chance, every vector and token read-out's correlation beside
    its chance level, and FT / corpus max (medians [quartiles] over units)."""
    q1 = {(g["layer"], g["site"]): g for g in doc["groups"]}
    ti = {(t["layer"], t["site"]): t for t in doc["corpus"]["token_identity"]}
    opt = {(o["layer"], o["site"]): o for o in doc["corpus"]["optimization"]}
    sc = {(r["layer"], r["site"], r["readout"]): r for r in doc["corpus"]["corpus_scores"]}
    layers = sorted({layer for layer, site in q1 if site in (neurons, features)})
    out = []
    lines = ["| layer | units | n | omega squared | permuted | share > 0.5 | FT word-like | Jaccard@10 restarts "
             "| chance | FT / corpus max |", "|---" * 10 + "|"]
    for layer in layers:
        for site in (neurons, features):
            g, t, o = q1.get((layer, site)), ti.get((layer, site)), opt.get((layer, site))
            if g is None:
                continue
            st = (g.get("stability") or {}).get("stats") or {}
            jac = st.get("jaccard_at_10") or {}
            half = "n/a" if not t else f"{100 * (t['above_half'] or 0):.1f}%"
            lines.append(f"| {layer} | {site} | {g['n']} | {_q(t['omega_squared']) if t else 'n/a'} "
                         f"| {_q(t['omega_squared_permuted'], brackets=False) if t else 'n/a'} "
                         f"| {half} "
                         f"| {100 * g['word_like']['ft']:.1f}% | {_q(jac.get('ft'))} "
                         f"| {_q(jac.get('baseline'), brackets=False)} "
                         f"| {_q(o['ft_over_corpus_max'], '.2f') if o else 'n/a'} |")
    out.append("\n".join(lines))
    names = [n for n in READOUT_ORDER if any((layer, features, n) in sc for layer in layers)]
    for stat, title in (("correlation", "correlation with the activation"), ("detection_auroc", "detection AUROC")):
        lines = [f"{title}, median (chance median in brackets)", "",
                 "| layer | units | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for layer in layers:
            for site in (neurons, features):
                cells = []
                for n in names:
                    r, c = sc.get((layer, site, n)), sc.get((layer, site, n + "_chance"))
                    cells.append("n/a" if r is None else
                                 f"{_q(r[stat], '.3f', False)} ({_q(c[stat], '.3f', False) if c else 'n/a'})")
                if any(c != "n/a" for c in cells):
                    lines.append(f"| {layer} | {site} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def support_table(store: str, site: str = "ffn.f") -> str:
    """Neuron support of a store's features per layer: k90 of the encoder and decoder rows and their participation
    ratios (median [quartiles]), out of the site's width."""
    from neurotext.store import read_table

    rows = [r for r in read_table(store, columns=["layer", "site", "support"]).to_pylist() if r["site"] == site]
    by: dict[int, list] = {}
    for r in rows:
        if r["support"]:
            by.setdefault(r["layer"], []).append(r["support"])
    lines = ["| layer | features | of neurons | encoder k90 | encoder participation ratio | decoder k90 "
             "| decoder participation ratio |", "|---" * 7 + "|"]
    for layer, sup in sorted(by.items()):
        lines.append(f"| {layer} | {len(sup)} | {sup[0]['d']} "
                     + " ".join(f"| {_quartiles(s[side][key] for s in sup)}" for side in ("encoder", "decoder")
                                for key in ("k90", "participation_ratio")) + " |")
    return "\n".join(lines)


def match_table(folder_a: str, folder_b: str, thresholds=(0.9, 0.7, 0.5), live_tokens: int = 100_000) -> str:
    """Two dictionaries of each site (two training seeds): the share of each one's features whose decoder
    direction has a match in the other (largest cosine above each threshold) and the median largest cosine, over
    all features and over A's live ones (active at least once in the first ``live_tokens`` text positions of the
    train part: a dead feature's decoder row is its initialization); the same for a random direction (chance)."""
    import importlib.util
    import pathlib

    import torch

    from neurotext import load_model
    from neurotext.model.dictionary import load_dictionaries, load_dictionary

    spec = importlib.util.spec_from_file_location("live_features", pathlib.Path(__file__).with_name("live_features.py"))
    live_features = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live_features)
    shares = " / ".join(f"{t}" for t in thresholds)
    lines = [f"| site | features | A matched in B (cosine > {shares}) | B matched in A | median best cosine, A "
             f"| live features of A | live matched (cosine > {shares}) | median best cosine, live "
             "| random direction's best cosine |", "|---" * 9 + "|"]

    def share(best):
        return " / ".join(f"{100 * float((best > t).float().mean()):.1f}%" for t in thresholds)

    for site in sorted(set(_dictionary_manifests(folder_a)) & set(_dictionary_manifests(folder_b))):
        a, b = (load_dictionary(f"{folder}/{site}") for folder in (folder_a, folder_b))
        da = torch.nn.functional.normalize(a.decoder_directions(), dim=1)
        db = torch.nn.functional.normalize(b.decoder_directions(), dim=1)
        cos = da @ db.T  # (Fa, Fb)
        best_a, best_b = cos.max(1).values, cos.max(0).values
        manifest = _dictionary_manifests(folder_a)[site]
        source = manifest["model"]["source"]  # the bundled model's path where it was trained; else its name
        model = load_model(source if pathlib.Path(source).exists() else manifest["model"]["name"], device="cpu")
        model.attach(load_dictionaries(f"{folder_a}/{site}", model))
        point = (manifest["layer"], manifest["site"].split(".", 1)[1] + ".f")
        live = live_features.fired_features(model, [point], live_tokens)[point]
        g = torch.Generator().manual_seed(0)
        rand = torch.nn.functional.normalize(torch.randn(len(best_a), da.shape[1], generator=g), dim=1)
        chance = (rand @ db.T).max(1).values
        lines.append(f"| {site} | {len(best_a)} | {share(best_a)} | {share(best_b)} | {float(best_a.median()):.3f} "
                     f"| {int(live.sum())} | {share(best_a[live])} | {float(best_a[live].median()):.3f} "
                     f"| {float(chance.median()):.3f} |")
    return "\n".join(lines)


def _med(values, spec: str = ".0f") -> str:
    import statistics

    v = [x for x in values if x is not None and x == x]
    return "n/a" if not v else format(statistics.median(v), spec)


def _iq(values) -> str:
    """Median [quartiles] of whole numbers (None: not reached, left out)."""
    import statistics

    v = sorted(x for x in values if x is not None)
    if not v:
        return "n/a"
    qs = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return f"{qs[1]:g} [{qs[0]:g}, {qs[2]:g}]"


def _probe_groups(records: list) -> dict:
    by: dict = {}
    for r in records:
        by.setdefault((r["layer"], r["site"], r["units"]), []).append(r)
    return dict(sorted(by.items()))


def probe_table(records: list) -> str:
    """neurotext probe's records per layer, site and kind of unit: the full probe's AP, k95 and k99 of the ranked
    units beside random units (medians [quartiles] over words), the best single unit's AP, the control task's
    selectivity, and FT's smallest recovering k beside the probe's k95 where an encode file gave one."""
    lines = ["| layer | site | units | width | words | AP full | best single unit AP | k95 | k99 | random k95 "
             "| selectivity | control AP |", "|---" * 12 + "|"]
    for (layer, site, units), rs in _probe_groups(records).items():
        lines.append(f"| {layer} | {site} | {units} | {rs[0]['width']} | {len(rs)} "
                     f"| {_quartiles(r['ap_full'] for r in rs)} "
                     f"| {_quartiles((r.get('best_single') or {}).get('ap', float('nan')) for r in rs)} "
                     f"| {_iq(r['k95'] for r in rs)} | {_iq(r['k99'] for r in rs)} "
                     f"| {_iq(r['random_k95'] for r in rs)} "
                     f"| {_quartiles(r['selectivity'] for r in rs)} "
                     f"| {_med(((r.get('control') or {}).get('ap_full') for r in rs), '.3f')} |")
    out = ["\n".join(lines)]
    ft = [r for r in records if (r.get("ft") or {}).get("probe_k") is not None or (r.get("ft") or {}).get("k")]
    if ft:
        grid = sorted({k for r in ft for k in (r["ft"].get("ks") or [])}) or None

        def on_grid(k, width):  # the probe's k95 rounded up to the k values encode ran
            ks = grid or sorted({4 ** i for i in range(12) if 4 ** i < width} | {width})
            return next((g for g in ks if g >= k), width)

        lines = ["FT's smallest recovering k of neurons (neurotext encode) beside the probe's k95 at the same site "
                 "(over its neurons, or its dictionary's features), per word (the probe's k95 rounded up to encode's "
                 "k values, 1, 4, 16, 64, 256 and the width, before comparing)",
                 "", "| layer | site | units | words | FT k (median) | probe k95 (median) | probe k95 on FT's grid "
                 "| FT above probe | FT below | equal | FT unrecovered | shared units (median) |", "|---" * 12 + "|"]
        for (layer, site, units), rs in _probe_groups(ft).items():
            rec = [r for r in rs if r["ft"].get("k") is not None and r["k95"] is not None]
            g = {id(r): on_grid(r["k95"], r["width"]) for r in rec}
            lines.append(f"| {layer} | {site} | {units} | {len(rs)} | {_med(r['ft']['k'] for r in rec)} "
                         f"| {_med(r['k95'] for r in rec)} | {_med(g.values())} "
                         f"| {sum(r['ft']['k'] > g[id(r)] for r in rec)} | {sum(r['ft']['k'] < g[id(r)] for r in rec)} "
                         f"| {sum(r['ft']['k'] == g[id(r)] for r in rec)} | {len(rs) - len(rec)} "
                         f"| {_med(r['ft'].get('shared') for r in rec)} |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def probe_variation(ref: list, others: list[tuple[str, list]]) -> str:
    """How far each group's medians move in another run (another split seed): the median absolute change of a
    word's k95 and of its full AP."""
    import statistics

    key = lambda r: (r["word"], r["layer"], r["site"], r["units"])  # noqa: E731
    lines = ["| layer | site | units | run | words in both | median abs. change of k95 (in doublings) "
             "| median abs. change of AP full |", "|---" * 7 + "|"]
    for label, recs in others:
        other = {key(r): r for r in recs}
        for (layer, site, units), rs in _probe_groups(ref).items():
            pairs = [(r, other[key(r)]) for r in rs if key(r) in other]
            dk = [abs(math.log2(a["k95"]) - math.log2(b["k95"])) for a, b in pairs if a["k95"] and b["k95"]]
            dap = [abs(a["ap_full"] - b["ap_full"]) for a, b in pairs]
            lines.append(f"| {layer} | {site} | {units} | {label} | {len(pairs)} "
                         f"| {statistics.median(dk) if dk else float('nan'):.1f} "
                         f"| {statistics.median(dap) if dap else float('nan'):.3f} |")
    return "\n".join(lines)


def ft_rank_table(store: str, dictionaries: str, site: str = "ffn.f") -> str:
    """At each feature's FT optimum (the store's vector, in the template): the rank of the feature's pre-activation
    among all the dictionary's features there, and the k-th largest pre-activation (a TopK dictionary's threshold):
    does FT's optimum make the feature fire?"""
    import statistics

    import torch

    from neurotext import load_model
    from neurotext.model.dictionary import load_dictionaries
    from neurotext.model.names import base_site
    from neurotext.store import read_table

    rows = [r for r in read_table(store, columns=["layer", "site", "unit", "vector", "activation"]).to_pylist()
            if r["site"] == site]
    model = load_model(None, device="cpu")
    model.attach(load_dictionaries(dictionaries, model))
    lines = ["| layer | features | firing at FT's optimum | rank of its pre-activation (median [quartiles]) "
             "| its pre-activation | k-th largest pre-activation there (median) |", "|---" * 6 + "|"]
    for layer in sorted({r["layer"] for r in rows}):
        g = [r for r in rows if r["layer"] == layer]
        d = model.dictionary(layer, site)
        point = (layer, base_site(site))
        acts = model.capture(torch.tensor([r["vector"] for r in g]), [point])[point]
        idx = torch.arange(model.width(layer, base_site(site))).expand(len(g), -1)
        with torch.no_grad():
            pre = d.pre(acts.reported(idx, acts.units(idx)))  # (n, F): every feature's pre-activation at the optimum
        units = torch.tensor([r["unit"] for r in g])
        own = pre[torch.arange(len(g)), units]
        rank = ((pre > own[:, None]).sum(1) + 1).tolist()
        kth = pre.topk(d.k, dim=1).values[:, -1] if getattr(d, "k", None) else torch.full((len(g),), float("nan"))
        lines.append(f"| {layer} | {len(g)} | {sum((r['activation'] or 0) > 0 for r in g)} | {_iq(rank)} "
                     f"| {statistics.median(own.tolist()):.1f} | {statistics.median(kth.tolist()):.1f} |")
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
    ap.add_argument("--features", metavar="WORDS_JSON",
                    help="words.json of a store of neurons and features: the two side by side per layer")
    ap.add_argument("--store", help="with --features: the store, for the features' neuron support")
    ap.add_argument("--dictionaries", help="with --features: the folder of the dictionaries (their quality)")
    ap.add_argument("--match", nargs=2, metavar=("DICTS_A", "DICTS_B"),
                    help="two folders of dictionaries (two seeds): features with a match in the other")
    ap.add_argument("--probe", nargs="+", metavar="PROBE_JSON",
                    help="probe.json of neurotext probe --out: the Q2 real-text tables of the first (+path: merged "
                         "into it, the words all of them probed); with more (label=path: another split seed), how far "
                         "each word's k95 and AP move")
    ap.add_argument("--ft-rank", metavar="STORE",
                    help="with --dictionaries: at each feature's FT optimum, its pre-activation's rank among the "
                         "dictionary's features (does the optimum make it fire?)")
    ap.add_argument("--site", default="ffn")
    args = ap.parse_args(argv)
    if args.dictionaries:
        print("Dictionaries\n\n" + dictionary_table(args.dictionaries) + "\n")
    if args.features:
        doc = json.load(open(args.features))
        print("Neurons and features\n\n" + features_table(doc, args.site, args.site + ".f") + "\n")
        if args.store:
            print("Neuron support\n\n" + support_table(args.store, args.site + ".f") + "\n")
    if args.ft_rank:
        print("Features at their FT optimum\n\n" + ft_rank_table(args.ft_rank, args.dictionaries, args.site + ".f")
              + "\n")
    if args.match:
        print("Dictionary seeds\n\n" + match_table(*args.match) + "\n")
    if args.words:
        doc = json.load(open(args.words))
        print("Q1\n\n" + q1_table(doc, args.site) + "\n\nStability\n\n" + stability_table(doc, args.site) + "\n")
    if args.encode:
        print("Q2\n\n" + q2_table(json.load(open(args.encode))) + "\n")
    if args.restarts:
        print("Restarts\n\n" + restarts_table(args.restarts, args.site) + "\n")
    if args.seeds:
        print("Seeds\n\n" + seeds_table(*args.seeds, site=args.site) + "\n")
    if args.probe:
        merged = [args.probe[0]] + [p[1:] for p in args.probe[1:] if p.startswith("+")]
        docs = [json.load(open(p.split("=", 1)[-1])) for p in merged]
        words = set.intersection(*({r["word"] for r in d if not r.get("skipped")} for d in docs))
        ref = [r for d in docs for r in d if not r.get("skipped") and r["word"] in words]
        print("Q2 on real text\n\n" + probe_table(ref) + "\n")
        rest = [p for p in args.probe[1:] if not p.startswith("+")]
        if rest:
            others = [(p.split("=", 1)[0] if "=" in p else p, json.load(open(p.split("=", 1)[-1]))) for p in rest]
            print("Between runs\n\n" + probe_variation(ref, others) + "\n")
    if args.corpus:
        ref = json.load(open(args.corpus[0].split("=", 1)[-1]))
        print("Real text\n\n" + corpus_tables(ref, args.site) + "\n")
        if len(args.corpus) > 1:
            others = [(a.split("=", 1)[0] if "=" in a else a, json.load(open(a.split("=", 1)[-1])))
                      for a in args.corpus[1:]]
            print("Variation\n\n" + corpus_variation(ref, others, args.site) + "\n")


if __name__ == "__main__":
    main()
