#!/usr/bin/env python
"""Quality of feature-textualization settings against a long reference run, on the benchmark's 64 FFN
neurons (11 per layer of the bundled model). Prints one JSON object per setting with --json.

    .venv/bin/python benchmarks/bench_settings.py "steps=128,restarts=2" "prune_at=0.75" "init=scan"

Each setting is a comma list of FTConfig overrides of the library defaults ("" = the defaults). The
reference is the defaults with 1,000 steps and 8 restarts (``--long-steps``, ``--long-restarts``).
Reported per setting: neuron-steps per neuron (the work), wall seconds, the ratio of the median
activation to the reference's median (torch's lower median, as bench_textualize.py), the median and
minimum of the per-neuron ratio, and the share of neurons where FT reaches the best real token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_textualize import sample_neurons  # noqa: E402

from neurotext import FTConfig, Textualizer, load_model  # noqa: E402


def parse_setting(text: str) -> FTConfig:
    types = {k: type(v) for k, v in vars(FTConfig()).items()}
    pairs = [kv.split("=", 1) for kv in text.split(",") if kv]
    unknown = [k for k, _ in pairs if k not in types]
    if unknown:
        raise SystemExit(f"bench_settings: unknown setting {unknown[0]!r}: valid are {', '.join(types)}")
    return FTConfig(**{k: types[k](v) for k, v in pairs})


def neuron_steps(cfg: FTConfig) -> int:
    """Row-steps per neuron: every restart up to the prune step, then the best one to the end."""
    return cfg.restarts * (cfg.prune_step + 1) + (cfg.steps - cfg.prune_step)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="*", default=[""], help='FTConfig overrides, e.g. "steps=128,restarts=2"')
    ap.add_argument("--per-layer", type=int, default=11, help="neurons per layer (first 64 kept)")
    ap.add_argument("--long-steps", type=int, default=1000)
    ap.add_argument("--long-restarts", type=int, default=8)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    configs = [(s, parse_setting(s)) for s in args.settings]  # bad settings fail before any work

    model = load_model(device=args.device)
    neurons = sample_neurons(model.n_layers, model.sizes["ffn"], args.per_layer, seed=0)[:64]

    def run(cfg):
        tx = Textualizer(model, cfg, progress=False)
        tx.scans.prefetch(model.n_layers - 1)  # scans are cached: time the optimization only
        t0 = time.perf_counter()
        results = tx.run(neurons)
        return results, time.perf_counter() - t0

    ref_cfg = FTConfig(steps=args.long_steps, restarts=args.long_restarts)
    ref, ref_s = run(ref_cfg)
    ref_act = torch.tensor([r.activation for r in ref])
    rows = [{"setting": f"reference steps={args.long_steps},restarts={args.long_restarts}",
             "neuron_steps_per_neuron": neuron_steps(ref_cfg), "seconds": ref_s,
             "median_activation": float(ref_act.median())}]
    for text, cfg in configs:
        results, seconds = run(cfg)
        act = torch.tensor([r.activation for r in results])
        ratio = act / ref_act
        rows.append({
            "setting": text or "defaults", "neuron_steps_per_neuron": neuron_steps(cfg), "seconds": seconds,
            "median_activation": float(act.median()),
            "median_over_reference_median": float(act.median() / ref_act.median()),
            "per_neuron_ratio_median": float(ratio.quantile(0.5)),
            "per_neuron_ratio_min": float(ratio.min()),
            "ft_at_least_best_token_share": sum(r.activation >= r.best_tokens[0]["activation"]
                                                for r in results) / len(results),
        })
        if not args.json:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return rows


if __name__ == "__main__":
    main()
