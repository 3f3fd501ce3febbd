#!/usr/bin/env python
"""Benchmark: neurotext's batched feature textualization against a one-neuron-at-a-time loop and the
machine's matrix-multiply throughput, in one run on one machine. Prints JSON with --json.

    .venv/bin/python benchmarks/bench_textualize.py --json                 # full run (minutes)
    .venv/bin/python benchmarks/bench_textualize.py --json --quick         # tiny sizes, for the test

A "neuron-step" is one Adam step of one (neuron, restart) row: forward to the target plus the
backward pass to the input. naive and engine are counted the same way. The naive loop runs in a
separate, fresh process (this script with --naive-only), so it shares no warmed-up state with the
engine; the JSON names the CPU (and GPU) the figures come from.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from neurotext import FTConfig, Neuron, Textualizer, load_model  # noqa: E402
from neurotext.engine.optimize import initial_points, learning_rate  # noqa: E402
from neurotext.model.devices import cpu_name, describe, resolve_device  # noqa: E402


def flops_per_neuron_step(d: int, d_ff: int, tokens: int, layer: int, site: str) -> float:
    """Analytic FLOPs of one neuron-step at (layer, site), forward plus backward to the input.

    Counts the matrix products neurotext runs: full layers 0..layer-1 on every template token; at the
    target layer K and V for every token and Q, attention output and LayerNorm for x's position only,
    then for ``ffn`` one dot product (one unit), for ``out`` the FFN at x's position. The backward pass
    to the input costs as many multiply-adds as the forward (no weight gradients are needed).
    """
    t = tokens
    full_layer = t * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * d_ff) + 2 * 2 * t * t * d  # QKV, out, FFN, attention
    target = t * 2 * d * 2 * d + 2 * d * d + 2 * d * d + 2 * 2 * t * d  # K,V all; Q, out for x; attention
    target += 2 * d if site == "ffn" else 2 * 2 * d * d_ff
    return 2.0 * (layer * full_layer + target)


def matmul_gflops(rows: int, d: int, d_ff: int, seconds: float = 1.0, device="cpu") -> dict[str, float]:
    """fp32 GFLOP/s of the engine's products, (rows, d_in) x (d_in, d_out) for the QKV, attention output,
    FFN in and FFN out shapes, each timed for ``seconds``; "max" is the machine figure the roofline uses."""
    out = {}
    for name, d_in, d_out in (("qkv", d, 3 * d), ("attn_out", d, d), ("ffn_in", d, d_ff), ("ffn_out", d_ff, d)):
        a = torch.randn(rows, d_in, device=device)
        w = torch.randn(d_out, d_in, device=device)
        for _ in range(3):
            torch.nn.functional.linear(a, w)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            torch.nn.functional.linear(a, w)
            n += 1
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        out[name] = 2.0 * rows * d_in * d_out * n / (time.perf_counter() - t0) / 1e9
    out["max"] = max(out.values())
    return out


def naive_run(hf, tok, embeddings, radius, neuron: Neuron, cfg: FTConfig, ffn_module) -> float:
    """The reference loop: one row at a time, full-depth Hugging Face forward with a hook, same template,
    steps, learning rate schedule, restarts and starts as the engine. Returns the best activation."""
    cls = embeddings[tok.cls_token_id]
    sep = embeddings[tok.sep_token_id]
    best = -math.inf
    for r in range(cfg.restarts):
        x0 = initial_points(embeddings, [f"{neuron.name}|{r}"], cfg.seed, cfg.init)[0]
        z = (x0 / radius).clone()
        z = (z / z.norm().clamp_min(1.0)).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=cfg.lr)
        for step in range(cfg.steps + 1):
            grabbed: dict = {}
            if neuron.site == "ffn":
                h = ffn_module(neuron.layer).register_forward_hook(
                    lambda m, a, o, box=grabbed: box.setdefault("v", o))
            with torch.set_grad_enabled(step < cfg.steps):
                try:
                    out = hf(inputs_embeds=torch.stack([cls, z * radius, sep])[None], output_hidden_states=True)
                finally:
                    if neuron.site == "ffn":
                        h.remove()
                v = grabbed["v"][0, 1, neuron.unit] if neuron.site == "ffn" else \
                    out.hidden_states[neuron.layer + 1][0, 1, neuron.unit]
            act = float(torch.nn.functional.gelu(v.detach())) if neuron.site == "ffn" else float(v.detach())
            best = max(best, act)
            if step == cfg.steps:
                break
            opt.zero_grad()
            (-v).backward()
            opt.param_groups[0]["lr"] = learning_rate(cfg, step)
            opt.step()
            with torch.no_grad():
                z.div_(z.norm().clamp_min(1.0))
    return best


def ffn_modules(hf, arch):
    """layer -> the FFN's first Linear of a plain Hugging Face model (paths from the adapter table)."""
    from neurotext.model.adapters import _get

    return lambda layer: _get(_get(hf, arch.layers)[layer], arch.ffn_in)


def make_random_bert_base(path: str) -> str:
    """A randomly initialized model of BERT-base's shape (12 x 768, FFN 3072, 30522 tokens), saved with a
    synthetic WordPiece vocabulary: no weights are downloaded."""
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(30522 - 5)]
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(path)
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(path)
    return path


def sample_neurons(n_layers: int, width: int, per_layer: int, seed: int) -> list[Neuron]:
    rng = random.Random(seed)
    return [Neuron(layer, "ffn", u) for layer in range(n_layers) for u in sorted(rng.sample(range(width), per_layer))]


def naive_main(args, cfg: FTConfig) -> dict:
    """--naive-only: run the naive loop on the named neurons in this (fresh) process; print its timing."""
    from transformers import AutoModel, AutoTokenizer

    model = load_model(args.model, device=args.device)
    hf = AutoModel.from_pretrained(model.source).to(model.device).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(model.source)
    emb = hf.get_input_embeddings().weight.detach()[: model.embeddings.shape[0]]
    radius = model.radius(cfg.percentile)
    neurons = model.parse(args.naive_only.split(","))
    t0 = time.perf_counter()
    best = {n.name: naive_run(hf, tok, emb, radius, n, cfg, ffn_modules(hf, model.arch)) for n in neurons}
    return {"seconds": time.perf_counter() - t0, "best": best, "pid": os.getpid()}


def naive_in_fresh_process(source, device, cfg: FTConfig, neurons) -> dict:
    """The naive loop in a new Python process: same settings, model and device, nothing shared."""
    cmd = [sys.executable, os.path.abspath(__file__), "--naive-only", ",".join(n.name for n in neurons),
           "--device", str(device), "--engine-config", ",".join(f"{k}={v}" for k, v in vars(cfg).items())]
    if source is not None:
        cmd += ["--model", source]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the naive process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def results_differ(a, b) -> dict:
    """How two runs on the same neurons differ: shares whose top-1 and top-10 nearest tokens change,
    mean top-10 overlap, and the median per-neuron activation ratio a / b."""
    n = len(a)
    top10 = [len({d["id"] for d in x.nearest[:10]} & {d["id"] for d in y.nearest[:10]}) / 10 for x, y in zip(a, b)]
    ratio = torch.tensor([x.activation / y.activation for x, y in zip(a, b)])
    return {
        "top1_changed_share": sum(x.nearest[0]["id"] != y.nearest[0]["id"] for x, y in zip(a, b)) / n,
        "top10_changed_share": sum(t < 1 for t in top10) / n,
        "top10_mean_overlap": sum(top10) / n,
        "median_activation_ratio": float(ratio.quantile(0.5)),
    }


def precision_effect(model, cfg: FTConfig, neurons, cache) -> dict:
    """Reduced precision beside seed noise, on the same neurons: float32 seed s is the reference; the
    seed-to-seed variation is float32 seed s+1 against it; bfloat16 steps (and TF32 matrix products on
    CUDA) are compared against it the same way, with the speed ratio (float32 seconds / their seconds)."""
    base = {**vars(cfg), "dtype": "float32"}

    def timed(overrides):
        tx = Textualizer(model, FTConfig(**{**base, **overrides}), cache_dir=cache, progress=False)
        t0 = time.perf_counter()
        res = tx.run(neurons)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return res, time.perf_counter() - t0

    ref, ref_s = timed({})
    out = {"neurons": len(neurons), "float32_seconds": ref_s,
           "seed_noise": {"seeds": [cfg.seed, cfg.seed + 1], **results_differ(timed({"seed": cfg.seed + 1})[0], ref)}}
    low = [("bfloat16", {"dtype": "bfloat16"}, None)]
    if model.device.type == "cuda":
        low.append(("tf32", {}, True))
    for name, overrides, tf32 in low:
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        if tf32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            res, secs = timed(overrides)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        diff = results_differ(res, ref)
        seed = out["seed_noise"]
        out[name] = {**diff, "seconds": secs, "speed_ratio_vs_float32": ref_s / secs,
                     "within_seed_noise": diff["top1_changed_share"] <= seed["top1_changed_share"]
                     and diff["top10_changed_share"] <= seed["top10_changed_share"]}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model (default: bundled all-MiniLM-L6-v2)")
    ap.add_argument("--random-model", choices=["bert-base"], default=None,
                    help="use a randomly initialized model of this shape instead (no weights needed)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    ap.add_argument("--engine-per-layer", type=int, default=171,
                    help="engine sample: FFN neurons per layer (default 171: 1,026 on a 6-layer model)")
    ap.add_argument("--naive-neurons", type=int, default=6, help="naive sample size (one per layer, cycled)")
    ap.add_argument("--quality-per-layer", type=int, default=11, help="long-run comparison: neurons per layer "
                    "(64 neurons over 6 layers by default)")
    ap.add_argument("--long-steps", type=int, default=1000)
    ap.add_argument("--long-restarts", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (for the test): 2 per layer, short runs")
    ap.add_argument("--skip-long", action="store_true", help="skip the long-run quality comparison")
    ap.add_argument("--skip-precision", action="store_true",
                    help="skip the reduced-precision comparison (bf16, and TF32 on CUDA, against seed noise)")
    ap.add_argument("--naive-only", default=None, metavar="NEURONS",
                    help="internal: run only the naive loop on these neurons and print its JSON (the fresh process)")
    ap.add_argument("--engine-config", default="",
                    help="FTConfig overrides for the engine, e.g. steps=64,restarts=2,dtype=bfloat16")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    overrides = dict(kv.split("=", 1) for kv in args.engine_config.split(",") if kv)
    types = {k: type(v) for k, v in vars(FTConfig()).items()}
    cfg = FTConfig(**{k: types[k](v) for k, v in overrides.items()})
    if args.naive_only:
        json.dump(naive_main(args, cfg), sys.stdout)
        return {}
    if args.quick:
        cfg = FTConfig(**{**vars(cfg), "steps": 8, "restarts": 2})
        args.engine_per_layer, args.naive_neurons, args.quality_per_layer = 2, 2, 1
        args.long_steps, args.long_restarts = 16, 2
    cache = tempfile.mkdtemp(prefix="neurotext-bench-")  # cold scan cache: scans are part of the cost
    if args.random_model:
        source = make_random_bert_base(os.path.join(cache, "model"))
    else:
        source = args.model
    device = resolve_device(args.device)
    model = load_model(source, device=device)
    d, d_ff, n_layers = model.sizes["out"], model.sizes["ffn"], model.n_layers
    tokens = len(model.prefix_ids) + 1 + len(model.suffix_ids)
    report = {"model": model.name, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device": describe(device, cfg.dtype),
              "machine": {"cpu": cpu_name(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
                          else None},
              "config": vars(cfg) | {"prune_step": cfg.prune_step}}

    # machine
    shapes = matmul_gflops(cfg.batch_size * tokens, d, d_ff, device=device)
    report["matmul_gflops"], report["matmul_gflops_by_shape"] = shapes["max"], shapes

    # engine: a sample of FFN neurons over all layers, cold scan cache, default settings
    neurons = sample_neurons(n_layers, d_ff, args.engine_per_layer, seed=0)
    tx = Textualizer(model, cfg, cache_dir=cache, progress=False)
    t0 = time.perf_counter()
    tx.scans.prefetch(n_layers - 1)  # the run would do this first; timed separately too
    scan_s = time.perf_counter() - t0
    results = {r.neuron: r for r in tx.run(neurons)}
    engine_s = time.perf_counter() - t0
    row_steps = len(neurons) * (cfg.restarts * (cfg.prune_step + 1) + (cfg.steps - cfg.prune_step))
    flops = sum(flops_per_neuron_step(d, d_ff, tokens, n.layer, "ffn") for n in neurons) / len(neurons)
    report.update({
        "engine_neurons": len(neurons), "engine_seconds": engine_s, "scan_seconds": scan_s,
        "engine_neuron_steps_per_s": row_steps / engine_s,
        "engine_neuron_steps_per_s_without_scans": row_steps / (engine_s - scan_s),
        "flops_per_neuron_step": flops,
    })
    report["achieved_gflops"] = flops * report["engine_neuron_steps_per_s"] / 1e9
    report["roofline_fraction"] = report["achieved_gflops"] / report["matmul_gflops"]
    report["roofline_fraction_without_scans"] = (
        flops * report["engine_neuron_steps_per_s_without_scans"] / 1e9 / report["matmul_gflops"])
    total_ffn = n_layers * d_ff
    report["projected_full_ffn_sweep_s"] = scan_s + (engine_s - scan_s) * total_ffn / len(neurons)
    report["projected_full_ffn_sweep_neurons"] = total_ffn

    # naive: the same settings, one row at a time, full depth, in a fresh process
    naive_sample = [neurons[(i % n_layers) * args.engine_per_layer + i // n_layers] for i in range(args.naive_neurons)]
    done = naive_in_fresh_process(model.source, device, cfg, naive_sample)
    naive, naive_s = done["best"], done["seconds"]
    report["naive_process"] = {"pid": done["pid"], "separate": done["pid"] != os.getpid()}
    report["naive_neurons"] = len(naive_sample)
    report["naive_neuron_steps_per_s"] = len(naive_sample) * cfg.restarts * (cfg.steps + 1) / naive_s
    report["speedup"] = report["engine_neuron_steps_per_s"] / report["naive_neuron_steps_per_s"]
    both = list(naive)
    eng = torch.tensor([results[n].activation for n in both])
    nai = torch.tensor([naive[n] for n in both])
    report["quality"] = {
        "neurons": both,
        "naive_mean": float(nai.mean()), "naive_median": float(nai.median()),
        "engine_mean": float(eng.mean()), "engine_median": float(eng.median()),
        "engine_at_least_naive_share": float((eng >= nai * (1 - 1e-4)).float().mean()),
        "note": "with prune_at < 1 the engine takes fewer neuron-steps per neuron than the naive loop",
    }

    # defaults versus a long run, and FT versus the best real token
    qn = sample_neurons(n_layers, d_ff, args.quality_per_layer, seed=0)[:64]
    default = Textualizer(model, cfg, cache_dir=cache, progress=False).run(qn)
    # the reference is fixed: library defaults (float32, random-token starts) with many more steps and
    # restarts, whatever engine settings are being measured
    long_cfg = FTConfig(steps=args.long_steps, restarts=args.long_restarts, seed=cfg.seed, batch_size=cfg.batch_size)
    ft_ge_best = [r.activation >= r.best_tokens[0]["activation"] for r in default]
    q = {"neurons": len(qn), "ft_at_least_best_token_share": sum(ft_ge_best) / len(ft_ge_best),
         "median_ft_over_best_token": float(torch.tensor([r.activation / r.best_tokens[0]["activation"]
                                                          for r in default]).median()),
         "default_median": float(torch.tensor([r.activation for r in default]).median())}
    if not args.skip_long:
        t0 = time.perf_counter()
        long = Textualizer(model, long_cfg, cache_dir=cache, progress=False).run(qn)
        q["long_seconds"] = time.perf_counter() - t0
        q["long_steps"], q["long_restarts"] = args.long_steps, args.long_restarts
        q["long_median"] = float(torch.tensor([r.activation for r in long]).median())
        q["default_over_long_median"] = q["default_median"] / q["long_median"]
        # torch's median of an even count is the lower middle value; the per-neuron ratio does not depend on it
        ratio = torch.tensor([a.activation / b.activation for a, b in zip(default, long)])
        q["default_over_long_per_neuron_median"] = float(ratio.quantile(0.5))
        q["default_over_long_per_neuron_min"] = float(ratio.min())
        q["default_at_least_long_share"] = float((ratio >= 1).float().mean())
    report["defaults_vs_long"] = q
    if not args.skip_precision:
        report["precision"] = precision_effect(model, cfg, qn, cache)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for k, v in report.items():
            print(f"{k:40s} {v}")
    return report


if __name__ == "__main__":
    main()
