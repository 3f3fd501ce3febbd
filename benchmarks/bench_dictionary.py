#!/usr/bin/env python
"""Benchmark: training a dictionary (``neurotext dictionary train``) on one FFN layer of the bundled model over
the default corpus's train part, against the machine's fp32 matmul throughput measured in the same run, and the
held-out quality after two passes and after twice the tokens. Prints JSON with --json.

    .venv/bin/python benchmarks/bench_dictionary.py --json            # full: two trainings (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/bench_dictionary.py --json --quick    # a few thousand tokens, for the test

What is measured (every figure says which run it comes from):

- **runs**: ``first`` trains with :class:`neurotext.dictionaries.DictionaryConfig`'s defaults (TopK, 4x the
  site width, k = 32) on ``--site`` (default L3.ffn) for ``--passes`` passes (default 2) over the train part of
  the corpus (the default corpus unless ``--corpus``); ``twice`` the same with twice the tokens. Each run is
  :func:`neurotext.dictionaries.train_dictionary` as the CLI calls it: ``seconds`` is the training (forward passes,
  the shuffling buffer and SAELens's training steps), ``eval_seconds`` the held-out evaluation at its end,
  ``wall_seconds`` everything (counting the train part, training, saving, evaluation). Tokens are text tokens
  trained on (the template and padding are not tokens).
- **FLOPs per token**: the SAE's forward and backward passes as the trainer computes them. A dense decoder (every
  architecture but TopK): 10 d_in F per token (encoder 2 d_in F and decoder 2 d_in F forward; backward: the
  decoder's weight and input gradients 4 d_in F, the encoder's weight gradient 2 d_in F). TopK's decoder reads
  only the k active rows (:mod:`neurotext.dictionaries.sparse`): 4 d_in F + 6 d_in k (``sae``), reported beside
  the dense count (``sae_dense``, and ``dense_equivalent_gflops``: the rate a dense decoder would have had to
  reach for the same speed). TopK's auxiliary loss on dead features, the optimizer and the top-k selection count
  as overhead. Plus the model's forward pass as far as the site, per text token
  (``bench_examples.flops_per_token`` over the run's mean padded length: padding, the template and activations
  read but not trained on count as overhead).
  ``roofline_fraction`` = achieved GFLOP/s / the machine's fp32 matmul GFLOP/s, the largest of
  ``bench_examples.matmul_gflops`` on the model's product shapes (rows: the mean forward batch) and on the SAE's
  (rows: the training batch; d_in -> F and F -> d_in).
- **target**: the held-out FVU of ``first`` within 0.02 of ``twice``'s, and ``first`` done (wall time,
  evaluation included) in at most 15 minutes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import asdict, replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from neurotext import load_model  # noqa: E402
from neurotext.corpus import open_corpus  # noqa: E402
from neurotext.dictionaries import DictionaryConfig, parse_site, train_dictionary  # noqa: E402
from neurotext.dictionaries.train import part_tokens  # noqa: E402
from neurotext.model.devices import cpu_name, describe, resolve_device  # noqa: E402

SITE = "L3.ffn"  # the middle of the bundled model's six layers
QUICK_TOKENS = 4096  # --quick: training tokens of the first run (twice: 8192)
QUICK_EVAL_TOKENS = 2048  # --quick: held-out tokens of each evaluation
TARGETS = {"fvu_gap": 0.02, "minutes": 15.0}
PASSES = 2.0  # the first run's training tokens, in passes over the train part


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sae_flops_per_token(d_in: int, features: int, k: int | None = None) -> float:
    """Forward and backward FLOPs of an SAE step per activation (see the module docstring): 10 d_in F with a
    dense decoder (``k`` None), 4 d_in F + 6 d_in k with the sparse decode of k active features."""
    return 10.0 * d_in * features if k is None else 4.0 * d_in * features + 6.0 * d_in * k


def run(model, site: str, corpus, cfg: DictionaryConfig, out: pathlib.Path) -> dict:
    """One training as the CLI runs it; its figures from the manifest it wrote."""
    t0 = time.perf_counter()
    d = train_dictionary(model, site, corpus, cfg, out=out, progress=False)
    wall = time.perf_counter() - t0
    m = d.manifest
    tr, ev = m["training"], m["eval"]
    return {
        "tokens": m["tokens"], "steps": m["steps"], "epochs": m["epochs"], "seconds": m["seconds"],
        "tokens_per_s": m["tokens_per_s"], "eval_seconds": ev["seconds"], "wall_seconds": wall,
        "forward_seconds": tr["forward_seconds"], "activations_read": tr["activations_read"],
        "positions": tr["positions"], "forward_batches": tr["forward_batches"],
        "mean_padded_length": tr["positions"] / tr["forward_contexts"],
        "final_batch_fvu": tr["final_batch_fvu"], "width": m["width"], "d_in": m["d_in"],
        "sparse_decode": tr.get("sparse_decode", False), "fused_adam": tr.get("fused_adam", False),
        "eval": {k: ev[k] for k in ("tokens", "contexts", "fvu", "mse", "l0", "dead_share", "dense_share",
                                    "downstream")},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    ap.add_argument("--model", default=None, help="model (default: the bundled all-MiniLM-L6-v2)")
    ap.add_argument("--site", default=SITE, help=f"the site (default {SITE})")
    ap.add_argument("--corpus", default=None, help="corpus source (default: the default corpus)")
    ap.add_argument("--max-length", type=int, default=DictionaryConfig().max_length,
                    help="text tokens per context at most")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_TOKENS} training tokens (twice: {2 * QUICK_TOKENS}), {QUICK_EVAL_TOKENS} held-out "
                         "tokens, short matmul timings: for the test")
    ap.add_argument("--passes", type=float, default=PASSES,
                    help=f"training tokens of the first run in passes over the train part (default {PASSES})")
    ap.add_argument("--skip-twice", action="store_true", help="only the first run (no FVU gap)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.passes > 0:
        ap.error(f"--passes must be > 0, got {args.passes}")

    bench_examples, bench_textualize = _sibling("bench_examples"), _sibling("bench_textualize")  # imported now:
    device = resolve_device(args.device)  # the source tree may change during the tens of minutes of training
    model = load_model(args.model, device=device)
    layer, site = parse_site(args.site, model)
    name = f"L{layer}.{site}"
    corpus = open_corpus(args.corpus)
    base = DictionaryConfig(max_length=args.max_length)
    train_part = part_tokens(model, corpus, base)["train"]
    one = QUICK_TOKENS if args.quick else round(args.passes * train_part)
    base = replace(base, tokens=one, eval_tokens=QUICK_EVAL_TOKENS if args.quick else base.eval_tokens)
    report = {
        "model": model.name, "site": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": describe(device),
        "machine": {"cpu": cpu_name(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "corpus": {"source": corpus.source, "train_tokens": train_part},
        "config": asdict(base), "quick": args.quick, "passes": None if args.quick else args.passes,
        "targets": TARGETS,
    }
    runs = {}
    with tempfile.TemporaryDirectory(prefix="neurotext-bench-dict-") as tmp:
        runs["first"] = run(model, name, corpus, base, pathlib.Path(tmp) / "one")
        if not args.skip_twice:
            runs["twice"] = run(model, name, corpus, replace(base, tokens=2 * one), pathlib.Path(tmp) / "twice")
    report["runs"] = runs
    head = runs["first"]

    # FLOPs per trained token and the machine's matmul throughput on the products this run makes
    d, d_ff = model.sizes["out"], model.sizes["ffn"]
    sae = sae_flops_per_token(head["d_in"], head["width"], base.k if head["sparse_decode"] else None)
    sae_dense = sae_flops_per_token(head["d_in"], head["width"])
    fwd = bench_examples.flops_per_token(d, d_ff, layer + 1, head["mean_padded_length"])
    seconds = 0.2 if args.quick else 1.0
    rows = max(1, round(head["positions"] / max(head["forward_batches"], 1)))
    model_shapes = bench_examples.matmul_gflops(rows, d, d_ff, seconds=seconds, device=device)
    sae_shapes = bench_textualize.matmul_gflops(base.batch_size, head["d_in"], head["width"],
                                                             seconds=seconds, device=device)
    shapes = {**{k: v for k, v in model_shapes.items() if k != "max"},
              "sae_encode": sae_shapes["ffn_in"], "sae_decode": sae_shapes["ffn_out"]}
    shapes["max"] = max(shapes.values())
    report.update({"flops_per_token": {"sae": sae, "sae_dense": sae_dense, "model": fwd, "total": sae + fwd},
                   "matmul_rows": {"model": rows, "sae": base.batch_size},
                   "matmul_gflops": shapes["max"], "matmul_gflops_by_shape": shapes})
    for r in runs.values():
        r["achieved_gflops"] = (sae + fwd) * r["tokens_per_s"] / 1e9
        r["roofline_fraction"] = r["achieved_gflops"] / shapes["max"]
        r["dense_equivalent_gflops"] = (sae_dense + fwd) * r["tokens_per_s"] / 1e9
    report.update({"tokens_per_s": head["tokens_per_s"], "achieved_gflops": head["achieved_gflops"],
                   "roofline_fraction": head["roofline_fraction"], "fvu_first": head["eval"]["fvu"]})
    if "twice" in runs:
        report["fvu_twice"] = runs["twice"]["eval"]["fvu"]
        report["fvu_gap"] = report["fvu_first"] - report["fvu_twice"]
    report["meets_targets"] = {
        "fvu_gap": abs(report["fvu_gap"]) <= TARGETS["fvu_gap"] if "fvu_gap" in report else None,
        "minutes": head["wall_seconds"] <= 60 * TARGETS["minutes"],
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for k, v in report.items():
            print(f"{k:24s} {v}")
    return report


if __name__ == "__main__":
    main()
