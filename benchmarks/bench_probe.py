#!/usr/bin/env python
"""Benchmark: Q2 on real text (``neurotext probe``) at the issue's target size, and the probe solver beside
scikit-learn's. Prints JSON with --json.

    .venv/bin/python benchmarks/bench_probe.py --json            # the target: encode's 100 default words, every
                                                                 # layer, ffn and out, the whole default corpus
    .venv/bin/python benchmarks/bench_probe.py --json --words 10 --layers 0,3   # a short run, projected
    .venv/bin/python benchmarks/bench_probe.py --json --quick    # tiny sizes, for the test

What is measured (every figure in the JSON says which run it comes from):

- **run**: :func:`neurotext.analysis.probe.run_probe` end to end, with its stages timed: ``index`` (the
  tokenization-only pass, the control words), ``pass`` (the corpus pass over the train and the test part, every
  site at once, keeping the sampled positions) and ``fit`` (every probe: full, control task, both k-sweeps, the
  best single unit, the test scores). ``total`` is their sum; the model load is not in it.
- **projected**: where the run is smaller than the target (fewer words or layers), the target's time from it:
  the index and the pass are charged as measured times the ratio of the layers the target runs to the layers run
  (the forward pass only goes as deep as the deepest site: an upper bound for a shallower run) and the fit is
  charged per (word, site) at the measured rate of each site kind (ffn, out). A projection, never a
  measurement: ``measured_target`` says which.
- **sklearn**: the full probes of a few words at one site fitted by scikit-learn's ``LogisticRegression`` (the
  same objective: ``C = 1 / (alpha n)``, ``l1_ratio``, ``class_weight="balanced"``, solver saga, on the same
  standardized train sample) beside neurotext's torch solver, one probe at a time, on the first 100,000 text
  tokens of each part: seconds, the test average precision of each and the overlap of their top-10 units.
- **matmul_gflops**: the machine's fp32 matrix-multiply throughput on the MiniLM FFN shape, for reading the
  seconds of another machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from neurotext import load_model  # noqa: E402
from neurotext.analysis import probe as P  # noqa: E402
from neurotext.analysis.encode import default_words  # noqa: E402
from neurotext.corpus import open_corpus  # noqa: E402
from neurotext.engine.threads import one_thread  # noqa: E402
from neurotext.model.devices import cpu_name, describe, resolve_device  # noqa: E402
from neurotext.model.names import parse_layers  # noqa: E402

TARGET_WORDS = 100  # encode's default word list
TARGET_SECONDS = 15 * 60  # the target on a 2-core CPU
SKLEARN_WORDS = 3  # full probes compared with scikit-learn
SKLEARN_TOKENS = 100_000  # text tokens per part for that comparison


def matmul_gflops(device, seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of a (4096, 384) x (384, 1536) product (MiniLM's FFN input shape)."""
    a = torch.randn(4096, 384, device=device)
    b = torch.randn(384, 1536, device=device)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * 4096 * 384 * 1536 * n / (time.perf_counter() - t0) / 1e9


def project(records: list[dict], seconds: dict, layers: list[int], n_layers: int, token_scale: float) -> dict:
    """The target's time (``TARGET_WORDS`` words, every layer, ffn and out, the whole corpus) from a smaller run."""
    done = [r for r in records if "skipped" not in r and r["units"] == "neurons"]
    fit_per = seconds["fit"] / max(len(done), 1)  # seconds per (word, site), both site kinds pooled
    depth = max(layers) + 1
    scale_pass = n_layers / depth * token_scale
    target_points = TARGET_WORDS * n_layers * 2
    out = {"index": seconds["index"] * token_scale, "pass": seconds["pass"] * scale_pass,
           "fit": fit_per * target_points}
    out["total"] = sum(out.values())
    out["how"] = (f"index x {token_scale:.2f} (the whole corpus's tokens / the run's); pass x {scale_pass:.2f} (that, "
                  f"and layers {n_layers} / deepest run {depth}); fit at {fit_per:.3f} s per (word, site) x "
                  f"{target_points} (word, site) pairs (words with fewer positives than the target's fit faster)")
    return out


def sklearn_comparison(model, corpus, cfg: P.ProbeConfig, words: list[str], point) -> dict:
    """Full probes of ``words`` at ``point`` by scikit-learn and by neurotext's solver, one at a time."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return {"skipped": "scikit-learn is not installed (pip install scikit-learn)"}
    usable, _ = P.resolve_probe_words(model, words)
    cfg = dataclasses.replace(cfg, max_tokens=SKLEARN_TOKENS)  # saga takes seconds a probe: a part of the corpus
    index = P.index_parts(model, corpus, cfg)
    targets = {w.text: w.forms for w in usable}
    samples = {p: P.sample_part(index[p], targets, p, cfg) for p in P.PARTS}
    data = P.collect(model, corpus, [point], index, samples, cfg, progress=False)
    rows = []
    for w in usable:
        pl = P.plan_word(w, None, samples, cfg)
        pw, _, nw, _ = pl.counts["train"]
        if pw == 0 or pl.counts["test"][0] == 0:
            continue
        tr = np.concatenate([pl.rows["train"][:pw], pl.rows["train"][pw:pw + nw]])
        raw = data.values(point, "train", pl.rows["train"])  # the word's sample, standardized as the probe does
        mean, sd = raw.mean(0), raw.std(0, correction=0)
        sd = torch.where(sd < P.STD_MIN, torch.ones_like(sd), sd)
        x = (data.values(point, "train", tr) - mean) / sd
        y = np.r_[np.ones(pw), np.zeros(nw)]
        a = np.where(y > 0, 0.5 / pw, 0.5 / nw)
        te = pl.rows["test"]
        x_te = ((data.values(point, "test", te) - mean) / sd).double().numpy()
        yt, _, vt = (v[0] for v in P._labels([pl], "test", len(te), "word"))
        t0 = time.perf_counter()
        with one_thread():
            fit = P.fit_logistic(x[None], torch.tensor(y, dtype=torch.float32)[None, None],
                                 torch.tensor(a, dtype=torch.float32)[None, None], torch.ones(1, 1, x.shape[1]),
                                 cfg.alpha, cfg.l1_ratio, cfg.steps, cfg.tol)
        ours_s = time.perf_counter() - t0
        w_ours = fit.w[0, 0].double().numpy()
        ap_ours = P.average_precision((x_te @ w_ours)[None], yt[None] > 0, vt[None])[0]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # saga's convergence warning: its iterations are reported
            sk = LogisticRegression(C=1 / (cfg.alpha * len(y)), l1_ratio=cfg.l1_ratio, solver="saga",
                                    class_weight="balanced", max_iter=5000, tol=1e-4).fit(x.double().numpy(), y)
        sk_s = time.perf_counter() - t0
        ap_sk = P.average_precision((x_te @ sk.coef_[0])[None], yt[None] > 0, vt[None])[0]
        top = lambda v: set(np.argsort(-np.abs(v), kind="stable")[:10].tolist())  # noqa: E731
        rows.append({"word": w.text, "torch_s": ours_s, "sklearn_s": sk_s, "sklearn_iterations": int(sk.n_iter_[0]),
                     "ap_torch": float(ap_ours), "ap_sklearn": float(ap_sk),
                     "nonzero_torch": int((w_ours != 0).sum()), "nonzero_sklearn": int((sk.coef_ != 0).sum()),
                     "top10_shared": len(top(w_ours) & top(sk.coef_[0]))})
    if not rows:
        return {"skipped": "no word with train and test occurrences"}
    return {"site": f"L{point[0]}.{point[1]}", "probes": rows,
            "torch_s": sum(r["torch_s"] for r in rows), "sklearn_s": sum(r["sklearn_s"] for r in rows),
            "speedup": sum(r["sklearn_s"] for r in rows) / max(sum(r["torch_s"] for r in rows), 1e-9),
            "max_ap_diff": max(abs(r["ap_torch"] - r["ap_sklearn"]) for r in rows)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (3 words, layers 0-1, 300 documents), for tests")
    ap.add_argument("--words", type=int, default=None, help=f"words (default {TARGET_WORDS}, the target)")
    ap.add_argument("--layers", default=None, help="layers, e.g. 0,3 (default: all, the target)")
    ap.add_argument("--max-docs", type=int, default=None, help="documents of the default corpus (default: all)")
    ap.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn comparison")
    ap.add_argument("--device", default="cpu", help="device (default cpu: the target is a 2-core CPU)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    model = load_model(None, device=device)
    n_words = args.words or (3 if args.quick else TARGET_WORDS)
    layers = parse_layers(args.layers, model.n_layers) if args.layers else ([0, 1] if args.quick else
                                                                             list(range(model.n_layers)))
    max_docs = args.max_docs or (300 if args.quick else None)
    at = ",".join(f"L{layer}.{site}" for layer in layers for site in ("ffn", "out"))
    words = [w.text for w in default_words(model, n_words)]
    corpus = open_corpus(None, max_docs=max_docs)
    cfg = P.ProbeConfig()
    report = {"machine": cpu_name(), "device": describe(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "model": model.name, "corpus": corpus.name, "max_docs": max_docs,
              "words": n_words, "layers": layers, "sites": at, "config": cfg.sampling() | cfg.probe(),
              "matmul_gflops": matmul_gflops(device, 0.2 if args.quick else 1.0)}
    t0 = time.perf_counter()
    result = P.run_probe(model, words, at=at, corpus=corpus, config=cfg, progress=False)
    wall = time.perf_counter() - t0
    seconds = dict(result.seconds)
    seconds["total"] = sum(seconds.values())
    done = [r for r in result.records if "skipped" not in r]
    report.update(seconds=seconds, wall_s=wall, records=len(done), skipped=len(result.records) - len(done),
                  tokens=done[0]["corpus_tokens"] if done else None,
                  fit_s_per_word_site=seconds["fit"] / max(len(done), 1))
    full = n_words == TARGET_WORDS and len(layers) == model.n_layers and max_docs is None
    report["measured_target"] = full
    report["target_s"] = TARGET_SECONDS
    token_scale = 1.0
    if max_docs is not None and done:  # the whole corpus's text tokens, for the projection (tokenization only)
        whole = P.index_parts(model, open_corpus(None), cfg)
        token_scale = sum(len(v.ids) for v in whole.values()) / sum(done[0]["corpus_tokens"].values())
    report["projected"] = None if full else project(result.records, seconds, layers, model.n_layers, token_scale)
    report["target_time_s"] = seconds["total"] if full else report["projected"]["total"]
    report["meets_target"] = report["target_time_s"] <= TARGET_SECONDS
    report["summary"] = {site: {"median_k95": float(np.median([r["k95"] for r in done if r["site"] == site])),
                                "median_ap_full": float(np.median([r["ap_full"] for r in done if r["site"] == site]))}
                         for site in ("ffn", "out") if any(r["site"] == site for r in done)}
    if not args.no_sklearn:
        point = (layers[-1], "out") if args.quick else (layers[len(layers) // 2], "ffn")
        report["sklearn"] = sklearn_comparison(model, corpus, cfg, words[:1 if args.quick else SKLEARN_WORDS], point)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"{report['machine']}: {n_words} words x {len(layers)} layers x ffn, out: index {seconds['index']:.1f} s,"
              f" pass {seconds['pass']:.1f} s, fit {seconds['fit']:.1f} s, total {seconds['total']:.1f} s"
              + ("" if full else f"; projected to the target: {report['projected']['total']:.0f} s")
              + f" (target {TARGET_SECONDS} s: {'met' if report['meets_target'] else 'NOT met'})")
    return report


if __name__ == "__main__":
    main()
