#!/usr/bin/env python
"""Benchmark: batched phrase search (many neurons' searches in one batch) against a one-neuron loop, same
settings, same machine, one run. Prints one JSON document on stdout.

    .venv/bin/python benchmarks/bench_phrase.py                       # 16 FFN neurons of layer 3, length 4
    .venv/bin/python benchmarks/bench_phrase.py --quick               # tiny sizes, for the test

Both paths run the same search per neuron (per-neuron random generators), so the phrases agree: the
benchmark reports the share of neurons whose phrase is identical, beside the throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from neurotext import load_model  # noqa: E402
from neurotext.engine.phrase import PhraseConfig  # noqa: E402
from neurotext.model.devices import cpu_name  # noqa: E402
from neurotext.phrases import Phraser  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--neurons", type=int, default=16, help="FFN units 0..N-1 of the layer")
    ap.add_argument("--length", type=int, default=4)
    ap.add_argument("--iters", type=int, default=PhraseConfig.iters)
    ap.add_argument("--swaps", type=int, default=PhraseConfig.swaps)
    ap.add_argument("--candidates", type=int, default=PhraseConfig.candidates)
    ap.add_argument("--starts", type=int, default=PhraseConfig.starts)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (layer 0, 3 neurons, length 2, 2 iterations)")
    args = ap.parse_args(argv)
    if args.quick:
        args.layer, args.neurons, args.length, args.iters, args.swaps, args.starts = 0, 3, 2, 2, 4, 2
    cfg = PhraseConfig(lengths=(args.length,), iters=args.iters, swaps=args.swaps, candidates=args.candidates,
                       starts=args.starts)
    model = load_model()
    ph = Phraser(model, cfg, progress=False)
    names = [f"L{args.layer}.ffn.{u}" for u in range(args.neurons)]
    ph.scans.prefetch(args.layer)  # the vocabulary scan is shared and cached: not part of either timing
    t0 = time.perf_counter()
    batched = ph.run(names)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = [ph.run([n])[0] for n in names]
    t_naive = time.perf_counter() - t0
    same = [b.phrases[0]["tokens"] == n.phrases[0]["tokens"] for b, n in zip(batched, naive)]
    # upper bound on exact evaluations: starts x (1 + iterations x swaps) phrases per neuron
    evals = args.starts * (1 + args.iters * args.swaps)
    doc = {
        "model": model.name, "layer": args.layer, "neurons": args.neurons, "length": args.length,
        "settings": {k: getattr(cfg, k) for k in ("iters", "candidates", "swaps", "starts", "patience")},
        "batched_s": t_batched, "naive_s": t_naive,
        "batched_neurons_per_s": args.neurons / t_batched, "naive_neurons_per_s": args.neurons / t_naive,
        "speedup": t_naive / t_batched,
        "max_phrases_evaluated_per_neuron": evals,
        "same_phrase_share": sum(same) / len(same),
        "median_activation": float(torch.tensor([b.phrases[0]["activation"] for b in batched]).median()),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_name(),
    }
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
