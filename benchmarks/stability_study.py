"""Which textualization of a neuron is reproducible? Cross-seed agreement of three read-outs of R restarts.

For each neuron, two independent groups of R restarts (seeds A and B; every restart's start depends only
on (seed, neuron, restart), so the first R restarts of a 16-restart run are an R-restart run) are each
reduced to ten tokens in three ways, and the two groups' ten tokens are compared (Jaccard):

- ``best``: the nearest tokens of the single best optimum (what a plain FT run reports);
- ``mean``: the nearest tokens of the normalized mean of the counted optima (unit vectors averaged);
- ``support``: tokens ranked by how many counted optima hold them in their top-10 (ties: mean position).

"Counted" is the library's rule (activation within ``stability_tol`` of the best restart). Also reported:
the library's per-neuron ``stability`` (jaccard_at_10, cosine) and the mean vector's activation relative
to the best optimum's (rescaled to the mean norm of the counted optima). Prints one JSON document.

Example:
    python benchmarks/stability_study.py --per-layer 16 --restarts 16 --seeds 0,1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from neurotext import FTConfig, Textualizer, load_model  # noqa: E402
from neurotext.engine import stability  # noqa: E402
from neurotext.model.devices import cpu_name  # noqa: E402

K = stability.JACCARD_K


def readouts(tx: Textualizer, layer: int, site: str, unit: int, detail: list[dict], r: int, tol: float) -> dict:
    """The three top-10 read-outs of the first ``r`` restarts of one neuron, and their stability."""
    rows = sorted([d for d in detail if d["restart"] < r], key=lambda d: -d["pre_activation"])
    acts = [d["activation"] for d in rows]
    keep = stability.counted(acts, tol)
    vecs = torch.stack([torch.as_tensor(rows[i]["vector"]) for i in keep])  # (c, d)
    ids = []
    for i in keep:  # every counted restart's top-K (recomputed: the detail keeps only ``top`` tokens)
        _, top = tx.nearest(torch.as_tensor(rows[i]["vector"])[None], K)
        ids.append(top[0].tolist())
    unit_vecs = vecs / vecs.norm(dim=1, keepdim=True)
    mean = unit_vecs.mean(dim=0)
    _, mean_ids = tx.nearest(mean[None], K)
    scaled = mean / mean.norm() * vecs.norm(dim=1).mean()
    _, mean_act = tx.activations_of(layer, site, scaled[None].to(tx.model.device),
                                    torch.tensor([unit], device=tx.model.device))
    count: dict[int, int] = {}
    pos: dict[int, int] = {}
    for row in ids:
        for p, t in enumerate(row):
            count[t] = count.get(t, 0) + 1
            pos[t] = pos.get(t, 0) + p
    support = sorted(count, key=lambda t: (-count[t], pos[t] / count[t], t))[:K]
    return {
        "best": ids[0], "mean": mean_ids[0].tolist(), "support": support,
        "jaccard_at_10": stability.pairwise_jaccard(ids), "cosine": stability.pairwise_cosine(vecs),
        "counted": len(keep), "mean_over_best_activation": float(mean_act[0]) / acts[0] if acts[0] > 0 else None,
    }


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model (default: the bundled all-MiniLM-L6-v2)")
    ap.add_argument("--per-layer", type=int, default=16, help="FFN neurons per layer, spread over the units")
    ap.add_argument("--restarts", type=int, default=16, help="restarts per seed group (the largest R)")
    ap.add_argument("--rs", default="4,8,16", help="group sizes R to compare (each <= --restarts)")
    ap.add_argument("--seeds", default="0,1", help="two seeds: the two independent groups")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--layers", default=None, help="comma list of layers (default: all)")
    ap.add_argument("--json", action="store_true", help="print only the JSON document")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rs = [int(r) for r in args.rs.split(",")]
    model = load_model(args.model)
    layers = [int(v) for v in args.layers.split(",")] if args.layers else list(range(model.n_layers))
    width = model.sizes["ffn"]
    step = max(1, width // args.per_layer)
    units = [7 + step * i for i in range(args.per_layer) if 7 + step * i < width]
    neurons = [f"L{layer}.ffn.{u}" for layer in layers for u in units]
    runs, seconds = {}, {}
    for s in seeds:
        tx = Textualizer(model, FTConfig(steps=args.steps, restarts=args.restarts, seed=s), progress=False)
        t0 = time.perf_counter()
        runs[s] = {r.neuron: r for r in tx.run(neurons)}
        seconds[s] = time.perf_counter() - t0
    tol = tx.config.stability_tol
    out_layers = {}
    for layer in layers:
        names = [n for n in neurons if n.startswith(f"L{layer}.")]
        per_r = {}
        for r in rs:
            agree = {"best": [], "mean": [], "support": []}
            within, cos, ratio, counted = [], [], [], []
            for name in names:
                unit = int(name.split(".")[-1])
                a, b = (readouts(tx, layer, "ffn", unit, runs[s][name].restarts_detail, r, tol) for s in seeds)
                for way in agree:
                    agree[way].append(stability.jaccard(a[way], b[way]))
                within += [a["jaccard_at_10"], b["jaccard_at_10"]]
                cos += [a["cosine"], b["cosine"]]
                ratio += [a["mean_over_best_activation"], b["mean_over_best_activation"]]
                counted += [a["counted"], b["counted"]]
            per_r[str(r)] = {
                "cross_seed_jaccard_median": {w: median(v) for w, v in agree.items()},
                "cross_seed_jaccard_mean": {w: statistics.mean(v) for w, v in agree.items()},
                "within_run_jaccard_median": median(within), "within_run_cosine_median": median(cos),
                "counted_restarts_median": median(counted),
                "mean_vector_activation_over_best_median": median(ratio),
            }
        out_layers[str(layer)] = {"neurons": len(names), "by_restarts": per_r}
    doc = {
        "cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": model.name, "neurons": len(neurons), "per_layer": args.per_layer, "steps": args.steps,
        "restarts": args.restarts, "seeds": seeds, "stability_tol": tol,
        "seconds_per_seed": seconds,
        "seconds_per_neuron_by_restarts": {str(r): statistics.mean(seconds.values()) / len(neurons) * r / args.restarts
                                           for r in rs},
        "layers": out_layers,
    }
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
