#!/usr/bin/env python
"""Benchmark: the streaming corpus pass (``neurotext examples``) on every unit of the bundled model, against
the machine's matrix-multiply throughput and a one-document-at-a-time loop, in one run on one machine.
Prints JSON with --json.

    .venv/bin/python benchmarks/bench_examples.py --json            # full run (many minutes)
    .venv/bin/python benchmarks/bench_examples.py --json --quick    # tiny sizes, for the test

What is measured (every figure in the JSON says which run it comes from):

- **engine**: :class:`neurotext.examples.CorpusRun` on all 11,520 units (``L*.ffn.*`` and ``L*.out.*``),
  default :class:`ExamplesConfig`, over the first ``--sample-docs`` documents of the default corpus and over
  the whole corpus. The timed span is the whole loop of chunks (tokenizing, batching, forward passes,
  folding into the running state, keeping the text of referred contexts); one batch goes through forward
  and fold first, untimed (it compiles the reduction with torch.compile). ``finalize`` (the per-neuron
  results) is timed separately, once. Tokens are text tokens (the corpus's tokens, not the template or
  the padding).
- **FLOPs per token**: analytic forward cost of the layers the pass runs, per position, with attention
  over the pass's average padded length T (template and padding included): per layer
  2·d·3d (QKV) + 2·d·d (attention output) + 2·2·d·d_ff (FFN) + 2·2·T·d (scores and weighted sum).
  ``achieved_gflops`` = FLOPs per token x text tokens/s (positions spent on padding and the template
  count as overhead; ``achieved_gflops_all_positions`` counts them as work), ``roofline_fraction`` =
  achieved / the machine's fp32 matmul GFLOP/s on the pass's product shapes, rows = the pass's mean batch
  rows (contexts x padded length).
- **breakdown**: a second loop over the sample's batches calling ``engine.prepare``, ``engine.forward`` and
  ``engine.fold`` with a timer around each, so a reader sees where the time goes.
- **naive**: in a fresh process (this script with --naive-only), a plain Hugging Face ``AutoModel`` forward
  per context, unbatched and full depth, with hooks capturing every requested unit, and a running top-K
  per unit (concatenate, ``torch.topk``); the same contexts (built with neurotext's ``Tokenize``, untimed).
  It keeps only the top-K (the engine also keeps statistics, histograms and samples).
- **agreement** of the top-K context sets (the engine's over both parts merged), and the same for
  ``dtype="bfloat16"`` (autocast) against float32.
- **peak RSS**: the pass (no finalize) over the first ``--rss-docs`` documents and over the same documents
  repeated ten times, each in a fresh process (--rss-only), as the process's own high-water mark (VmHWM:
  on Linux ru_maxrss would also count the memory of the benchmark process that started it). Finalize's
  memory is per neuron, not per document: it is reported with its time, from this process.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from neurotext import load_model  # noqa: E402
from neurotext.corpus import Corpus, open_corpus  # noqa: E402
from neurotext.engine import fold  # noqa: E402
from neurotext.engine.contexts import SplitConfig, Tokenize, batches  # noqa: E402
from neurotext.engine.memory import corpus_batch_limits  # noqa: E402
from neurotext.engine.pass_state import WORST, top_parts  # noqa: E402
from neurotext.examples import CorpusRun, Examiner, ExamplesConfig  # noqa: E402
from neurotext.model.adapters import resolve_model_path  # noqa: E402
from neurotext.model.devices import cpu_name, describe, resolve_device  # noqa: E402
from neurotext.model.names import parse_neurons  # noqa: E402

ALL_UNITS = "L*.ffn.*,L*.out.*"  # every unit of the model: both sites of every layer
QUICK_UNITS = "L0-1.ffn.0-7,L0-1.out.0-7"  # --quick: 32 units on two layers
TOP_K = 20  # contexts kept per unit (ExamplesConfig.top's default); the naive loop keeps as many
RSS_TIMES = 10  # the streaming check: the same documents this many times
TIE_TOLERANCE = 1e-4  # top-k agreement: values this close to a set's k-th value count as tied with it
TARGETS = {"roofline_fraction": 0.6, "speedup": 1.5, "rss_growth": 0.10, "rss_mb": 3072}


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def matmul_gflops(rows: int, d: int, d_ff: int, seconds: float, device) -> dict[str, float]:
    """fp32 GFLOP/s of (rows, d_in) x (d_in, d_out) for the QKV, attention output, FFN in and FFN out shapes
    (bench_textualize's measurement); "max" is the figure the roofline uses."""
    return _sibling("bench_textualize").matmul_gflops(rows, d, d_ff, seconds=seconds, device=device)


def flops_per_token(d: int, d_ff: int, layers: int, length: float) -> float:
    """Analytic forward FLOPs per position of ``layers`` BERT layers, attention over ``length`` positions:
    QKV 2·d·3d, attention output 2·d·d, FFN 2·2·d·d_ff, attention scores and weighted sum 2·2·T·d."""
    return layers * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * d_ff + 2 * 2 * length * d)


def _status_mb(field: str) -> float | None:
    """A memory figure of /proc/self/status in MiB (None where /proc cannot be read)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's peak resident set size so far, in MiB: VmHWM, the high-water mark of its own memory
    since it started; where there is no /proc, ru_maxrss. (On Linux ru_maxrss also keeps the peak of the
    memory a process replaced by exec, here the benchmark process that started it: a child started from a
    2 GB parent reports at least 2 GB.)"""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float | None:
    """This process's resident set size now, in MiB (None where /proc cannot be read)."""
    return _status_mb("VmRSS")


def repeated_corpus(docs: int, times: int) -> Corpus:
    """The first ``docs`` documents of the default corpus, ``times`` times over, as an in-memory corpus."""
    texts = list(open_corpus(None, max_docs=docs).documents())

    def read(problems):
        for _ in range(times):
            yield from texts

    return Corpus(name=f"fortune[:{docs}]x{times}", source=f"fortune, first {docs} documents x {times}", kind="txt",
                  read=read)


# --------------------------------------------------------------------------- the engine
def new_run(model, cfg: ExamplesConfig, units: str, corpus) -> CorpusRun:
    ex = Examiner(model, cfg, progress=False)
    probes, names = ex.probes(units.split(","))
    run = CorpusRun(ex, probes, names, ex.open(corpus))
    run.check_nonempty()
    return run


def warm_up(run: CorpusRun) -> None:
    """One batch (the corpus's first) through forward and fold into a throwaway state: compiles the reduction
    and warms the kernels, so the timed pass does not pay for it."""
    contexts = next(iter(run.chunks()))[1]
    run.position = {"chunk": 0, "doc": 0, "piece": 0, "index": 0, "tokens": 0}  # the timed pass starts over
    batch = run.engine.prepare(batches(contexts, *limits(run))[0])
    run.engine.fold(run.engine.empty_state(), batch, run.engine.forward(batch))


def limits(run: CorpusRun) -> tuple[int, int]:
    return corpus_batch_limits(run.model, run.engine, run.config.batch_size, run.config.batch_tokens)


def timed_pass(run: CorpusRun):
    """The pass as :meth:`Examiner.run` runs it (chunks, ``process``), timed; returns (figures, state).

    The batch shapes are recorded by wrapping ``engine.prepare`` (a list append per batch)."""
    shapes = []  # (contexts, padded length, text tokens) per batch
    prepare = run.engine.prepare

    def recording(contexts):
        b = prepare(contexts)
        shapes.append((b.ids.shape[0], b.ids.shape[1], int(b.text.sum())))
        return b

    warm_up(run)
    run.engine.prepare = recording
    state = run.new_state()
    try:
        t0 = time.perf_counter()
        for _, contexts in run.chunks():
            run.process(state, contexts, progress=False)
        seconds = time.perf_counter() - t0
    finally:
        del run.engine.prepare  # the class's method again
    return shape_figures(run, shapes, seconds, state), state


def shape_figures(run: CorpusRun, shapes, seconds: float, state) -> dict:
    model = run.model
    contexts = sum(b for b, _, _ in shapes)
    positions = sum(b * t for b, t, _ in shapes)
    tokens = int(state.tokens.sum())
    assert tokens == sum(n for _, _, n in shapes) and contexts == int(state.contexts.sum())
    length = positions / contexts  # mean over contexts of their batch's padded length (template included)
    layers = run.engine.depth + 1
    flops = flops_per_token(model.sizes["out"], model.sizes["ffn"], layers, length)
    return {
        "documents": run.position["doc"] + 1, "contexts": contexts, "tokens": tokens, "batches": len(shapes),
        "seconds": seconds, "tokens_per_s": tokens / seconds,
        "mean_padded_length": length, "positions": positions, "positions_per_token": positions / tokens,
        "mean_batch_rows": positions / len(shapes), "layers_run": layers,
        "flops_per_token": flops, "achieved_gflops": flops * tokens / seconds / 1e9,
        "achieved_gflops_all_positions": flops * positions / seconds / 1e9,
    }


def breakdown(run: CorpusRun) -> dict:
    """Where the time of a pass goes: the same chunks and batches as ``process``, with a timer around
    prepare (tensors), forward (the model, hooks, values to the CPU), fold (reduction and top-K/sample/statistics
    merges) and keep (the registry of referred contexts); "other" is reading and tokenizing the corpus."""
    warm_up(run)
    eng, state = run.engine, run.new_state()
    t = dict.fromkeys(("prepare", "forward", "fold", "keep"), 0.0)
    t0 = time.perf_counter()
    for _, contexts in run.chunks():
        for group in batches(contexts, *limits(run)):
            a = time.perf_counter()
            b = eng.prepare(group)
            c = time.perf_counter()
            found = eng.forward(b)
            d = time.perf_counter()
            eng.fold(state, b, found)
            t["prepare"] += c - a
            t["forward"] += d - c
            t["fold"] += time.perf_counter() - d
        a = time.perf_counter()
        run.keep(state, contexts)
        t["keep"] += time.perf_counter() - a
    total = time.perf_counter() - t0
    out = {f"{k}_seconds": v for k, v in t.items()}
    out["other_seconds"] = total - sum(t.values())
    out["total_seconds"] = total
    out["tokens_per_s"] = int(state.tokens.sum()) / total
    out["forward_share"] = t["forward"] / total
    out["fold_share"] = t["fold"] / total
    return out


def engine_top(state, names: dict, k: int) -> dict:
    """Per unit, the engine's top-k over all contexts (the merge of its parts' top-k):
    {"names", "values" (N, k) float32, "contexts" (N, k) int64}; -1 / NaN where fewer contexts were seen."""
    out_n, out_v, out_c = [], [], []
    for point, ps in state.points.items():
        order = torch.cat(ps.top, 1)  # (u, P*K) top_order, larger = better
        best = order.topk(k, dim=1).values
        vals, ctx = top_parts(best)
        empty = best == WORST
        out_v.append(vals.masked_fill(empty, float("nan")))
        out_c.append(ctx.masked_fill(empty, -1))
        out_n += names[point]
    return {"names": out_n, "values": torch.cat(out_v), "contexts": torch.cat(out_c)}


def top_agreement(a: dict, b: dict, tie: float = TIE_TOLERANCE) -> dict:
    """How two top-k tables (:func:`engine_top`'s form) agree, unit by unit (matched by name): overlap of the
    context sets (|A ∩ B| / k), the share of units with identical sets, the share whose sets are identical or
    differ only by ties (every context in one set only has a value within ``tie`` of that set's k-th value,
    and the two k-th values are within ``tie``: equal values, e.g. GELU's -0.0 on many contexts, are kept
    in any order), and the largest absolute difference between their i-th best values (sorted, so tied
    contexts swapping places do not count)."""
    index = {n: i for i, n in enumerate(b["names"])}
    rows = [index[n] for n in a["names"]]
    assert len(rows) == len(b["names"]), "the same units"
    bc, bv = b["contexts"][rows], b["values"][rows]
    overlaps, tied = [], []
    for ca, va_, cb, vb_ in zip(a["contexts"].tolist(), a["values"].tolist(), bc.tolist(), bv.tolist()):
        da, db = {c: v for c, v in zip(ca, va_) if c >= 0}, {c: v for c, v in zip(cb, vb_) if c >= 0}
        overlaps.append(len(da.keys() & db.keys()) / max(len(da), len(db), 1))
        ka, kb = min(da.values(), default=0.0), min(db.values(), default=0.0)
        tied.append(da.keys() == db.keys() or len(da) == len(db) and abs(ka - kb) <= tie
                    and all(da[c] - ka <= tie for c in da.keys() - db.keys())
                    and all(db[c] - kb <= tie for c in db.keys() - da.keys()))
    va = a["values"].nan_to_num(nan=-float("inf")).sort(dim=1, descending=True).values  # empty entries last
    vb = bv.nan_to_num(nan=-float("inf")).sort(dim=1, descending=True).values
    diff = (va - vb).abs()
    finite = diff[torch.isfinite(diff)]
    ov = torch.tensor(overlaps, dtype=torch.float64)
    return {"units": len(overlaps), "k": a["contexts"].shape[1], "mean_overlap": float(ov.mean()),
            "min_overlap": float(ov.min()), "identical_share": float((ov == 1).double().mean()),
            "identical_up_to_ties_share": sum(tied) / len(tied), "tie_tolerance": tie,
            "max_abs_value_diff": float(finite.max()) if len(finite) else 0.0,
            "max_top_value": float(va[:, 0][torch.isfinite(va[:, 0])].abs().max())}


# --------------------------------------------------------------------------- the naive loop (fresh process)
def naive_main(args) -> dict:
    """--naive-only OUT: the one-document-at-a-time loop on the sample; its top-k table goes to OUT."""
    from transformers import AutoModel, AutoTokenizer

    device = resolve_device(args.device)
    _, source = resolve_model_path(None)  # the bundled model's directory
    hf = AutoModel.from_pretrained(source).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    # preparation, untimed: the same contexts as the engine's (neurotext's Tokenize), the units by name
    cfg = ExamplesConfig()
    split = SplitConfig(cfg.test_share, cfg.split_seed)
    tokenize = Tokenize(tokenizer, cfg.max_length, cfg.seed, split)
    contexts = list(tokenize.contexts(open_corpus(None, max_docs=args.sample_docs).documents()))
    sizes = {"ffn": hf.config.intermediate_size, "out": hf.config.hidden_size}
    units: dict[tuple[int, str], list] = {}
    for n in parse_neurons(args.units.split(","), hf.config.num_hidden_layers, sizes):
        units.setdefault((n.layer, n.site), []).append(n)
    names = [n.name for point in sorted(units) for n in units[point]]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    grabbed: dict = {}
    handles = []
    for layer, site in sorted(units):
        block = hf.encoder.layer[layer]
        if site == "ffn":  # the FFN's post-activation (B, T, d_ff)
            handles.append(block.intermediate.register_forward_hook(
                lambda m, a, o, key=(layer, site): grabbed.__setitem__(key, o)))
        else:  # the block's output (B, T, d)
            handles.append(block.register_forward_hook(
                lambda m, a, o, key=(layer, site): grabbed.__setitem__(key, o[0] if isinstance(o, tuple) else o)))
    index = {p: torch.tensor([n.unit for n in units[p]], device=device) for p in units}
    top_v = torch.full((len(names), TOP_K), -float("inf"), device=device)
    top_c = torch.full((len(names), TOP_K), -1, dtype=torch.long, device=device)

    def one(c) -> torch.Tensor:
        hf(input_ids=torch.tensor([[cls, *c.ids.tolist(), sep]], device=device))
        return torch.cat([grabbed[p][0, 1:-1].index_select(-1, index[p]).max(0).values for p in sorted(units)])

    tokens = sum(len(c.ids) for c in contexts)
    with torch.no_grad():
        one(contexts[0])  # warm-up, untimed
        t0 = time.perf_counter()
        for c in contexts:
            acts = one(c).float()  # (N,) the context's activation of every unit: max over its text positions
            v, i = torch.cat([top_v, acts[:, None]], 1).topk(TOP_K, dim=1)
            top_c = torch.cat([top_c, torch.full_like(top_c[:, :1], c.index)], 1).gather(1, i)
            top_v = v
        top_v = top_v.cpu()
        seconds = time.perf_counter() - t0
    for h in handles:
        h.remove()
    top_c = top_c.cpu()
    torch.save({"names": names, "values": top_v.masked_fill(top_c < 0, float("nan")), "contexts": top_c},
               args.naive_only)
    return {"pid": os.getpid(), "seconds": seconds, "contexts": len(contexts), "tokens": tokens,
            "tokens_per_s": tokens / seconds, "device": str(device)}


def in_fresh_processes(*flag_lists: list[str]) -> list[dict]:
    """This script with each list of flags in a new Python process, all at once; their JSON from stdout."""
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *flags], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for flags in flag_lists]
    out = []
    for flags, proc in zip(flag_lists, procs):
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{flags[0]} process failed: {stderr.strip().splitlines()[-3:]}")
        out.append(json.loads(stdout))
    return out


# --------------------------------------------------------------------------- the streaming check (fresh process)
def rss_main(args) -> dict:
    """--rss-only TIMES: the pass (no finalize) over the first --rss-docs documents TIMES times over."""
    device = resolve_device(args.device)
    model = load_model(None, device=device)
    run = new_run(model, ExamplesConfig(), args.units, repeated_corpus(args.rss_docs, args.rss_only))
    state = run.new_state()
    before = rss_mb()  # the model, the tokenizer and the pass's state (fixed size)
    t0 = time.perf_counter()
    for _, contexts in run.chunks():
        run.process(state, contexts, progress=False)
    return {"pid": os.getpid(), "times": args.rss_only, "documents": args.rss_docs * args.rss_only,
            "contexts": int(state.contexts.sum()), "tokens": int(state.tokens.sum()),
            "seconds": time.perf_counter() - t0, "peak_rss_before_pass_mb": before, "peak_rss_mb": rss_mb(),
            "rss_after_pass_mb": current_rss_mb(),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def engine_section(model, args, full_docs: int | None, device) -> tuple[dict, dict]:
    """The engine on the sample (timed, then the breakdown), the machine's matmul throughput on the pass's
    shapes, the engine on the full corpus, and finalize on the last of them; returns (report fields, the
    sample's float32 top-k table)."""
    cfg = ExamplesConfig()
    run = new_run(model, cfg, args.units, open_corpus(None, max_docs=args.sample_docs))
    sample, state = timed_pass(run)
    out = {"units": sum(len(v) for v in run.names.values()), "engine": {"sample": sample},
           "reduce_compiled": fold._compiled.get("reduce") not in (None, False)}
    fp32_top = engine_top(state, run.names, TOP_K)
    out["breakdown"] = breakdown(new_run(model, cfg, args.units, open_corpus(None, max_docs=args.sample_docs)))

    rows = round(sample["mean_batch_rows"])
    shapes = matmul_gflops(rows, model.sizes["out"], model.sizes["ffn"], seconds=0.2 if args.quick else 1.0,
                           device=device)
    out.update({"matmul_rows": rows, "matmul_gflops": shapes["max"], "matmul_gflops_by_shape": shapes})
    sample["roofline_fraction"] = sample["achieved_gflops"] / shapes["max"]

    headline = "sample"
    if not args.skip_full:
        del run, state
        gc.collect()
        run = new_run(model, cfg, args.units, open_corpus(None, max_docs=full_docs))
        full, state = timed_pass(run)
        full["roofline_fraction"] = full["achieved_gflops"] / shapes["max"]
        out["engine"]["full"] = full
        headline = "full"
    head = out["engine"][headline]
    out.update({"headline": headline, "tokens_per_s": head["tokens_per_s"], "flops_per_token": head["flops_per_token"],
                "achieved_gflops": head["achieved_gflops"], "roofline_fraction": head["roofline_fraction"]})
    if not args.skip_finalize:
        before = rss_mb()
        t0 = time.perf_counter()
        results = run.finalize(state)
        out["finalize"] = {"run": headline, "neurons": len(results), "seconds": time.perf_counter() - t0,
                           "peak_rss_before_mb": before, "peak_rss_after_mb": rss_mb()}
        del results
    del run, state
    gc.collect()
    return out, fp32_top


def bf16_section(model, args, sample: dict, fp32_top: dict) -> dict:
    """The sample's pass under bfloat16 autocast: its speed and its top-k sets against float32's."""
    run = new_run(model, ExamplesConfig(dtype="bfloat16"), args.units, open_corpus(None, max_docs=args.sample_docs))
    bf16, state = timed_pass(run)
    bf16["speed_ratio_vs_float32"] = bf16["tokens_per_s"] / sample["tokens_per_s"]
    bf16["agreement_vs_float32"] = top_agreement(engine_top(state, run.names, TOP_K), fp32_top)
    return bf16


def naive_section(args, device, sample: dict, fp32_top: dict) -> dict:
    """The one-document-at-a-time loop on the sample in a fresh process; its top-k sets against the engine's."""
    with tempfile.TemporaryDirectory(prefix="neurotext-bench-") as tmp:
        out = os.path.join(tmp, "naive.pt")
        [done] = in_fresh_processes(["--naive-only", out, "--device", str(device), "--sample-docs",
                                     str(args.sample_docs), "--units", args.units])
        naive_top = torch.load(out)
    assert done["tokens"] == sample["tokens"] and done["contexts"] == sample["contexts"], "the same contexts"
    return {**done, "separate_process": done["pid"] != os.getpid(),
            "agreement_vs_engine": top_agreement(naive_top, fp32_top)}


def rss_section(args, device) -> dict:
    """The streaming check: peak RSS of the pass over --rss-docs documents and over them RSS_TIMES times over."""
    common = ["--device", str(device), "--rss-docs", str(args.rss_docs), "--units", args.units]
    one, many = in_fresh_processes(*(["--rss-only", str(t), *common] for t in (1, RSS_TIMES)))
    return {"1x": one, f"{RSS_TIMES}x": many, "growth": (many["peak_rss_mb"] - one["peak_rss_mb"]) / one["peak_rss_mb"],
            "note": "peak RSS (VmHWM) of a fresh process running the pass without finalize; the two processes run "
                    "at the same time (their seconds are not a speed figure); ru_maxrss_mb also counts the "
                    "parent's memory at the start, on Linux"}


# --------------------------------------------------------------------------- main
def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    ap.add_argument("--sample-docs", type=int, default=2000,
                    help="the sample: the first N documents of the default corpus (naive, bf16, breakdown)")
    ap.add_argument("--rss-docs", type=int, default=500,
                    help=f"the streaming check: the first N documents, then the same {RSS_TIMES} times over")
    ap.add_argument("--units", default=ALL_UNITS, help=f"units read (default: every unit, {ALL_UNITS})")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (for the test): 32 units on 2 layers, a 20-document sample, 'full' = 40 "
                         "documents, streaming check on 5 documents")
    ap.add_argument("--skip-full", action="store_true", help="skip the full-corpus pass")
    ap.add_argument("--skip-naive", action="store_true", help="skip the one-document-at-a-time loop")
    ap.add_argument("--skip-bf16", action="store_true", help="skip the bfloat16 autocast pass")
    ap.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS streaming check")
    ap.add_argument("--skip-finalize", action="store_true", help="do not time finalize (the per-neuron results)")
    ap.add_argument("--naive-only", default=None, metavar="OUT",
                    help="internal: run only the naive loop (the fresh process), its top-k table to OUT")
    ap.add_argument("--rss-only", type=int, default=None, metavar="TIMES",
                    help="internal: run only the streaming pass over --rss-docs documents TIMES times over")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    if args.naive_only or args.rss_only:
        json.dump(naive_main(args) if args.naive_only else rss_main(args), sys.stdout)
        return {}
    full_docs = None  # the whole corpus
    if args.quick:
        args.units, args.sample_docs, args.rss_docs, full_docs = QUICK_UNITS, 20, 5, 40
    device = resolve_device(args.device)
    model = load_model(None, device=device)
    cfg = ExamplesConfig()
    report = {
        "model": model.name, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": describe(device, cfg.dtype),
        "machine": {"cpu": cpu_name(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "config": asdict(cfg),
        "settings": {"units": args.units, "sample_docs": args.sample_docs, "rss_docs": args.rss_docs,
                     "rss_times": RSS_TIMES, "full_docs": full_docs, "top_k_compared": TOP_K, "quick": args.quick,
                     "neurotext_compile": os.environ.get("NEUROTEXT_COMPILE", "1")},
        "warmup": "before each timed pass, one batch (the corpus's first) through forward and fold, untimed: it "
                  "compiles the reduction (torch.compile on the CPU) and warms the kernels",
        "targets": TARGETS,
    }

    engine, fp32_top = engine_section(model, args, full_docs, device)
    report["settings"]["reduce_compiled"] = engine.pop("reduce_compiled")
    report.update(engine)
    sample = engine["engine"]["sample"]
    if not args.skip_bf16:
        report["bfloat16"] = bf16_section(model, args, sample, fp32_top)
    if not args.skip_naive:
        report["naive"] = naive_section(args, device, sample, fp32_top)
        report["speedup"] = sample["tokens_per_s"] / report["naive"]["tokens_per_s"]
    if not args.skip_rss:
        report["rss"] = rss_section(args, device)
    report["meets_targets"] = {
        "roofline_fraction": report["roofline_fraction"] >= TARGETS["roofline_fraction"],
        "speedup": report["speedup"] >= TARGETS["speedup"] if "speedup" in report else None,
        "rss": (report["rss"]["growth"] < TARGETS["rss_growth"]
                and report["rss"][f"{RSS_TIMES}x"]["peak_rss_mb"] < TARGETS["rss_mb"]) if "rss" in report else None,
    }
    report["peak_rss_mb"] = rss_mb()
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for k, v in report.items():
            print(f"{k:24s} {v}")
    return report


if __name__ == "__main__":
    main()
