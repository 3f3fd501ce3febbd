"""Benchmark: a decoder's forward+backward step with the template prefix's keys and values cached (x runs
alone) against the full ``BOS x`` sequence, in one process on one machine. Prints JSON with --json.

    .venv/bin/python benchmarks/bench_decoder_prefix.py --json                  # bundled SmolLM2, L16.ffn
    .venv/bin/python benchmarks/bench_decoder_prefix.py --model DIR --layer 1   # any decoder

A step is what one Adam step of the engine costs: rows of x (random vocabulary tokens) through the
truncated forward to ``L{layer}.ffn``, one unit per row, and the backward pass to x. The two modes are
timed alternately (``--rounds`` times each) and the gradients of the two modes are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a decoder LM (default: the bundled smollm2)")
    ap.add_argument("--layer", type=int, default=16, help="target layer (ffn site)")
    ap.add_argument("--rows", type=int, default=1024, help="rows per step")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternating")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from neurotext import load_model
    from neurotext.model.devices import cpu_name

    m = load_model(args.model, device=args.device)
    if not m.decoder:
        raise SystemExit(f"{m.name} is not a decoder LM")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.embeddings.shape[0], (args.rows,), generator=g)
    x0 = m.embeddings[ids.to(m.device)].float().clone()
    units = torch.randint(0, m.sizes["ffn"], (args.rows, 1), generator=g).to(m.device)
    point = (args.layer, "ffn")

    def step():
        x = x0.clone().requires_grad_(True)
        m.capture(x, [point])[point].units(units).sum().backward()
        return x.grad

    seconds, grads = {"cached": [], "full": []}, {}
    for _ in range(args.rounds):
        for mode in ("cached", "full"):
            m._prefix_kv = None if mode == "cached" else False  # None: (re)build the cache; False: full passes
            grads[mode] = step()  # warm-up, and the gradient compared below
            if m.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            if m.device.type == "cuda":
                torch.cuda.synchronize()
            seconds[mode].append((time.perf_counter() - t) / args.steps)
    cached, full = statistics.median(seconds["cached"]), statistics.median(seconds["full"])
    out = {
        "model": m.name, "machine": {"cpu": cpu_name(), "gpu": torch.cuda.get_device_name(m.device)
                                     if m.device.type == "cuda" else None},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(m.device),
        "layer": args.layer, "rows": args.rows, "prefix_tokens": len(m.prefix_ids),
        "seconds_per_step": {"cached": cached, "full": full, "all": seconds},
        "speedup": full / cached,
        "gradient_relative_difference": float((grads["cached"] - grads["full"]).norm() / grads["full"].norm()),
    }
    print(json.dumps(out, indent=None if args.json else 2))
    return out


if __name__ == "__main__":
    main()
