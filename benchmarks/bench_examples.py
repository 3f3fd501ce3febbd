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
  and fold first, untimed (it compiles the reduction and the layers' pieces with torch.compile). Every timed
  batch runs the layers compiled, as a pass runs the batches after the corpus's first ``COMPILE_FROM`` (2,048)
  contexts: the figures are a long pass's steady state.
  ``finalize`` (the per-neuron results) is timed separately, once. Tokens are text tokens (the corpus's tokens,
  not the template or the padding).
- **FLOPs per token**: analytic forward cost of the layers the pass runs, per position, with attention
  over the pass's average padded length T (template and padding included): per layer
  2·d·3d (QKV) + 2·d·d (attention output) + 2·2·d·d_ff (FFN) + 2·2·T·d (scores and weighted sum).
  ``achieved_gflops`` = FLOPs per token x text tokens/s (positions spent on padding and the template
  count as overhead; ``achieved_gflops_all_positions`` counts them as work), ``roofline_fraction`` =
  achieved / the machine's fp32 matmul GFLOP/s on the pass's product shapes, rows = the pass's mean batch
  rows (contexts x padded length).
- **breakdown**: a second loop over the sample's batches calling ``engine.prepare``, ``engine.forward`` and
  ``engine.fold`` with a timer around each, so a reader sees where the time goes;
  ``forward_only_roofline_fraction``: the sample's FLOPs over the forward timer alone (the pass with a free fold).
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
- **floor**: the check against a bare forward pass, each in a fresh process, wall time from the process's start
  (model load included in both): a batched Hugging Face forward over the same contexts that takes each
  context's maximum of every unit and nothing else (--floor-only), and ``neurotext examples`` of the same units
  into a store, as a user runs it; ``ratio`` = examples / floor (target at most 4/3). The floor's loop alone
  (start-up excluded) and its Hugging Face forward calls alone, counted with the pass's FLOPs per text token over
  the same batches, against the same roofline: ``floor.floor.roofline_fraction``,
  ``floor.floor.forward_only_roofline_fraction``.
- **dictionaries** (b): one random-weight TopK dictionary of ``--dict-expansion`` x the FFN width per layer,
  written with SAELens's own classes (``TopKSAE.save_model``; decoder bias = the layer's mean FFN activation on
  the first 64 documents, so the random features split the activations instead of one direction winning
  everywhere), all their features (73,728 at 8x) and every neuron, over the whole corpus into a store, in a
  fresh process (--dict-only): peak RSS (target 4 GB), time, FLOPs per text token with the encodings (2 d_in F
  per dictionary: the pass encodes text positions only), the roofline with the encoder's product among the
  shapes (target 0.5); and the streaming check of the pass over ``--rss-docs`` documents and ten times them
  (target +5%). The state's memory by the formula (:func:`neurotext.engine.pass_state.state_bytes`) beside it.
- **projection** (c): a random-weight model of BERT-base's shape (12 layers, 768 / 3,072; the bundled
  tokenizer, BERT's uncased vocabulary) with a random 8x dictionary on ``--projection-layers`` of its last
  layers and every neuron, over the first ``--projection-docs`` documents in a fresh process (--project-only): the
  measured memory per unit (RSS the empty state takes / units) beside the formula, and tokens/s; projected to an
  8x dictionary on every layer (294,912 features and 46,080 neurons) over the whole corpus: memory (model,
  dictionaries, state) and time at the measured GFLOP/s.
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
from neurotext.engine.corpus_pass import COMPILE_FROM, Probe  # noqa: E402
from neurotext.engine.memory import corpus_batch_limits  # noqa: E402
from neurotext.engine.pass_state import WORST, state_bytes, top_parts  # noqa: E402
from neurotext.examples import CorpusRun, Examiner, ExamplesConfig  # noqa: E402
from neurotext.model.adapters import resolve_model_path  # noqa: E402
from neurotext.model.devices import cpu_name, describe, resolve_device  # noqa: E402
from neurotext.model.names import parse_neurons  # noqa: E402

ALL_UNITS = "L*.ffn.*,L*.out.*"  # every unit of the model: both sites of every layer
QUICK_UNITS = "L0-1.ffn.0-7,L0-1.out.0-7"  # --quick: 32 units on two layers
TOP_K = 20  # contexts kept per unit (ExamplesConfig.top's default); the naive loop keeps as many
RSS_TIMES = 10  # the streaming check: the same documents this many times
TIE_TOLERANCE = 1e-4  # top-k agreement: values this close to a set's k-th value count as tied with it
TARGETS = {"roofline_fraction": 0.6, "speedup": 1.5, "rss_growth": 0.10, "rss_mb": 3072, "floor_ratio": 4 / 3,
           "dict_rss_mb": 4096, "dict_rss_growth": 0.05, "dict_roofline_fraction": 0.5}
DICT_K = 32  # TopK's k of the random dictionaries (SAELens's TopK, a typical k)
DICT_CENTER_DOCS = 64  # documents whose mean FFN activation is a random dictionary's decoder bias


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
    """One batch (the corpus's first) through forward and fold into a throwaway state: compiles the reduction and
    the layers' pieces, which every later batch of this run then uses (``compile_from`` 0: a pass compiles from
    the corpus's context ``COMPILE_FROM`` on; the timed pass runs as a long pass's later batches do), and warms
    the kernels, so the timed pass does not pay for it."""
    run.engine.compile_from = 0
    contexts = next(iter(run.chunks()))[1]
    run.position = {"chunk": 0, "doc": 0, "piece": 0, "index": 0, "tokens": 0}  # the timed pass starts over
    batch = run.engine.prepare(batches(contexts, *limits(run))[0])
    run.engine.fold(run.engine.empty_state(), batch, run.engine.forward(batch))


def limits(run: CorpusRun) -> tuple[int, int]:
    return corpus_batch_limits(run.model, run.engine, run.config.batch_size, run.config.batch_tokens)


def timed_pass(run: CorpusRun):
    """The pass as :meth:`Examiner.run` runs it (chunks, ``process``), timed; returns (figures, state).

    The batch shapes are recorded by wrapping ``engine.prepare`` (a list append per batch: :func:`record_shapes`)."""
    warm_up(run)
    return timed_pass_into(run, run.new_state())


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
    """This script with each list of flags in a new Python process, one after the other (two passes at once on
    two cores change each other's memory, not only their time: see rss_section); their JSON from stdout."""
    out = []
    for flags in flag_lists:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *flags], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
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
           "reduce_compiled": fold._compiled.get("reduce") not in (None, False),
           "layers_compiled": len(run.engine._forwards or {})}
    fp32_top = engine_top(state, run.names, TOP_K)
    out["breakdown"] = breakdown(new_run(model, cfg, args.units, open_corpus(None, max_docs=args.sample_docs)))

    rows = round(sample["mean_batch_rows"])
    shapes = matmul_gflops(rows, model.sizes["out"], model.sizes["ffn"], seconds=0.2 if args.quick else 1.0,
                           device=device)
    out.update({"matmul_rows": rows, "matmul_gflops": shapes["max"], "matmul_gflops_by_shape": shapes})
    sample["roofline_fraction"] = sample["achieved_gflops"] / shapes["max"]
    # the forward pass alone (the breakdown's forward timer on the same sample: the model, hooks, values to the CPU;
    # no fold): the fraction a pass would reach if folding cost nothing
    b = out["breakdown"]
    b["forward_only_gflops"] = sample["flops_per_token"] * sample["tokens"] / b["forward_seconds"] / 1e9
    b["forward_only_roofline_fraction"] = b["forward_only_gflops"] / shapes["max"]

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
            "note": "peak RSS (VmHWM) of a fresh process running the pass without finalize, the two processes one "
                    "after the other (run at the same time on the 2-core AMD EPYC, the 10x process peaked 15-17% "
                    "higher than alone, reproduced three times, MALLOC_ARENA_MAX=2 included: a quiet machine's "
                    "figure); ru_maxrss_mb also counts the parent's memory at the start, on Linux"}


# --------------------------------------------------------------------------- the floor (fresh processes)
def floor_main(args) -> dict:
    """--floor-only: a bare batched Hugging Face forward over the corpus's contexts (neurotext's Tokenize, the same
    contexts as the pass) that takes each context's maximum of every requested unit and nothing else; the wall
    time from this process's start, model load and tokenizing included."""
    from transformers import AutoModel, AutoTokenizer

    device = resolve_device(args.device)
    _, source = resolve_model_path(None)
    hf = AutoModel.from_pretrained(source).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    cfg = ExamplesConfig()
    tokenize = Tokenize(tokenizer, cfg.max_length, cfg.seed, SplitConfig(cfg.test_share, cfg.split_seed))
    sizes = {"ffn": hf.config.intermediate_size, "out": hf.config.hidden_size}
    units: dict[tuple[int, str], list] = {}
    for n in parse_neurons(args.units.split(","), hf.config.num_hidden_layers, sizes):
        units.setdefault((n.layer, n.site), []).append(n.unit)
    depth = max(layer for layer, _ in units)
    hf.encoder.layer = hf.encoder.layer[:depth + 1]  # only as deep as the deepest unit, like the pass
    grabbed: dict = {}
    for layer, site in units:
        block = hf.encoder.layer[layer]
        mod = block.intermediate if site == "ffn" else block
        mod.register_forward_hook(lambda m, a, o, key=(layer, site): grabbed.__setitem__(
            key, o[0] if isinstance(o, tuple) else o))
    index = {p: torch.tensor(u, device=device) for p, u in units.items()}
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    contexts = tokenize.contexts(open_corpus(None, max_docs=args.floor_docs).documents())
    tokens = n_contexts = positions = forward = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for _, chunk in chunks_of(contexts, cfg.chunk_size):
            for group in batches(chunk, cfg.batch_size, cfg.batch_tokens):
                t = max(len(c.ids) for c in group) + 2
                ids = torch.zeros((len(group), t), dtype=torch.long)
                mask = torch.zeros((len(group), t), dtype=torch.long)
                for i, c in enumerate(group):
                    ids[i, :len(c.ids) + 2] = torch.tensor([cls, *c.ids.tolist(), sep])
                    mask[i, :len(c.ids) + 2] = 1
                a = time.perf_counter()
                hf(input_ids=ids.to(device), attention_mask=mask.to(device))
                forward += time.perf_counter() - a
                text = mask.bool().to(device)
                text[:, 0] = False
                text[torch.arange(len(group)), mask.sum(1) - 1] = False
                for p, v in grabbed.items():  # each context's maximum of every unit, and nothing else
                    v.index_select(-1, index[p]).masked_fill(~text.unsqueeze(-1), -float("inf")).amax(1).cpu()
                tokens += sum(len(c.ids) for c in group)
                n_contexts += len(group)
                positions += ids.numel()
    seconds = time.perf_counter() - t0
    # the pass's FLOP count (:func:`flops_per_token`) over the same batches: comparable with the engine's figures
    flops = flops_per_token(hf.config.hidden_size, hf.config.intermediate_size, depth + 1, positions / n_contexts)
    return {"pid": os.getpid(), "tokens": tokens, "contexts": n_contexts, "positions": positions,
            "seconds": seconds, "flops_per_token": flops, "achieved_gflops": flops * tokens / seconds / 1e9,
            "forward_seconds": forward, "forward_only_gflops": flops * tokens / forward / 1e9}


def chunks_of(contexts, size):
    from neurotext.engine.contexts import chunks

    return chunks(contexts, size)


def floor_section(args, device) -> dict:
    """The bare forward (--floor-only) and ``neurotext examples`` of the same units into a store, each in a fresh
    process, one after the other (not at once: both are timed)."""
    t0 = time.time()
    [floor] = in_fresh_processes(["--floor-only", "--device", str(device), "--units", args.units,
                                  *(["--floor-docs", str(args.floor_docs)] if args.floor_docs else [])])
    floor["wall_seconds"] = time.time() - t0
    with tempfile.TemporaryDirectory(prefix="neurotext-bench-") as tmp:
        cmd = [sys.executable, "-m", "neurotext", "examples", *args.units.split(","), "--out", tmp, "--device",
               str(device), *(["--max-docs", str(args.floor_docs)] if args.floor_docs else [])]
        t0 = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if done.returncode != 0:
            raise RuntimeError(f"neurotext examples failed: {done.stderr.strip().splitlines()[-3:]}")
    return {"floor": floor, "examples_wall_seconds": wall, "command": " ".join(cmd[1:]).replace(tmp, "DIR"),
            "ratio": wall / floor["wall_seconds"],
            "note": "wall time of each fresh process, start to exit (Python, imports, model load included); "
                    "the floor reads the same contexts, batched and length-sorted like the pass, only as deep as the "
                    "deepest unit, and takes each context's maximum of every unit"}


# --------------------------------------------------------------------------- dictionaries (fresh processes)
def write_dictionaries(model_dir: str, out: pathlib.Path, layers, expansion: int, k: int, seed: int = 0) -> list[str]:
    """One random-weight TopK dictionary per layer on its FFN (``blocks.L.mlp.hook_post``), written by SAELens
    itself; its decoder bias is the layer's mean FFN activation over the first DICT_CENTER_DOCS documents."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    model = load_model(model_dir, device="cpu")
    run = new_run(model, ExamplesConfig(), ",".join(f"L{layer}.ffn.0" for layer in layers),
                  open_corpus(None, max_docs=DICT_CENTER_DOCS))
    sums = {layer: torch.zeros(model.sizes["ffn"], dtype=torch.float64) for layer in layers}
    count = 0
    for _, contexts in run.chunks():
        for group in batches(contexts, 64, 8192):
            b = run.engine.prepare(group)
            probes = {(layer, "ffn"): Probe(layer, "ffn", units=torch.arange(model.sizes["ffn"]))
                      for layer in layers}
            found = run.engine.forward(b, probes)
            for (layer, _), v in found.items():
                sums[layer] += v[b.text].double().sum(0)
            count += int(b.text.sum())
    paths = []
    torch.manual_seed(seed)
    d_ff = model.sizes["ffn"]
    for layer in layers:
        cfg = sae_lens.TopKSAEConfig(d_in=d_ff, d_sae=expansion * d_ff, k=k, metadata=SAEMetadata(
            model_name=model.name, hook_name=f"blocks.{layer}.mlp.hook_post"))
        sae = sae_lens.TopKSAE(cfg)
        with torch.no_grad():
            sae.b_dec.copy_((sums[layer] / max(count, 1)).float())
        path = out / f"blocks.{layer}.mlp.hook_post"
        sae.save_model(str(path))
        paths.append(str(path))
    return paths


def dict_main(args) -> dict:
    """--dict-only TIMES: the pass of --units and every feature of the dictionaries in --dict-dir over the corpus
    (the whole one, or the first --rss-docs documents TIMES times over), into a store unless --no-store."""
    device = resolve_device(args.device)
    model = load_model(args.dict_model, device=device)
    model.attach(args.dict_dir)
    units = ",".join([args.units] + [f"L{layer}.ffn.f*" for layer, _ in model.dictionaries])
    corpus = repeated_corpus(args.rss_docs, args.dict_only) if args.rss_docs_for_dict else \
        open_corpus(None, max_docs=args.dict_docs)
    before = rss_mb()
    run = new_run(model, ExamplesConfig(token_stats=False), units, corpus)  # (off at this scale anyway: > 1 GiB)
    warm_up(run)
    shapes = record_shapes(run)
    state = run.new_state()
    state_rss = rss_mb()
    t0 = time.perf_counter()
    for _, contexts in run.chunks():
        run.process(state, contexts, progress=False)
    seconds = time.perf_counter() - t0
    del run.engine.prepare
    out = shape_figures(run, shapes, seconds, state)
    enc = run.engine.encode_flops_per_token()
    out.update({"pid": os.getpid(), "times": args.dict_only, "units": sum(len(v) for v in run.names.values()),
                "features": sum(p.size for p in run.engine.probes.values() if p.sparse),
                "encode_flops_per_token": enc, "model_flops_per_token": out["flops_per_token"],
                "flops_per_token": out["flops_per_token"] + enc,
                "achieved_gflops": (out["flops_per_token"] + enc) * out["tokens"] / seconds / 1e9,
                "state_bytes_formula": run.engine.state_bytes(), "peak_rss_before_pass_mb": before,
                "peak_rss_with_state_mb": state_rss, "peak_rss_pass_mb": rss_mb(),
                "encode_rows": min(round(out["tokens"] / out["batches"]),
                                   (1 << 26) // (4 * max(d.width for d in model.dictionaries.values())))})
    if not args.no_store:
        from neurotext.store.examples import write_results

        with tempfile.TemporaryDirectory(prefix="neurotext-bench-") as tmp:
            t0 = time.perf_counter()
            exdir = pathlib.Path(tmp)
            write_results(exdir, run.finalizer(state, release=True))
            out["finalize_seconds"] = time.perf_counter() - t0
            out["store_mb"] = sum(p.stat().st_size for p in exdir.iterdir()) / 2**20
    out["peak_rss_mb"] = rss_mb()
    return out


def dictionary_section(args, device) -> dict:
    """(b): random 8x dictionaries on every layer's FFN, all their features and every neuron: the whole corpus into
    a store (peak RSS, time, roofline with the encodings), then the streaming check at 1x and 10x --rss-docs."""
    _, source = resolve_model_path(None)
    model = load_model(None, device="cpu")
    layers = range(args.dict_layers or model.n_layers)
    with tempfile.TemporaryDirectory(prefix="neurotext-bench-dicts-") as tmp:
        paths = write_dictionaries(source, pathlib.Path(tmp), layers, args.dict_expansion, DICT_K)
        common = ["--device", str(device), "--dict-dir", tmp, "--dict-model", source, "--units", args.units]
        [full] = in_fresh_processes(["--dict-only", "1", *common,
                                     *(["--dict-docs", str(args.dict_docs)] if args.dict_docs else [])])
        one, ten = in_fresh_processes(*(["--dict-only", str(t), "--rss-docs", str(args.rss_docs),
                                         "--rss-docs-for-dict", "--no-store", *common] for t in (1, RSS_TIMES)))
    rows = round(full["mean_batch_rows"])
    d_ff = model.sizes["ffn"]
    shapes = matmul_gflops(rows, model.sizes["out"], d_ff, seconds=0.2 if args.quick else 1.0, device=device)
    shapes["encode"] = encode_gflops(full["encode_rows"], d_ff, args.dict_expansion * d_ff,
                                     0.2 if args.quick else 1.0, device)
    roof = max(v for k, v in shapes.items() if k != "max")
    return {"dictionaries": len(paths), "expansion": args.dict_expansion, "k": DICT_K, "units": full["units"],
            "features": full["features"], "full": full,
            "matmul_gflops_by_shape": shapes, "matmul_gflops": roof,
            "roofline_fraction": full["achieved_gflops"] / roof,
            "rss": {"1x": one, f"{RSS_TIMES}x": ten,
                    "growth": (ten["peak_rss_pass_mb"] - one["peak_rss_pass_mb"]) / one["peak_rss_pass_mb"]},
            "peak_rss_mb": full["peak_rss_mb"],
            "note": "random weights (SAELens's TopK init, decoder bias centred on the data); peak RSS of fresh "
                    "processes (VmHWM): 'full' runs the pass over the corpus and writes the store; the streaming "
                    "check runs the pass only, the two processes one after the other"}


def encode_gflops(rows: int, d_in: int, d_out: int, seconds: float, device) -> float:
    """fp32 GFLOP/s of the encoder's product (rows, d_in) x (d_in, d_out) (a dictionary's pre-activations)."""
    a = torch.randn(rows, d_in, device=device)
    w = torch.randn(d_in, d_out, device=device)
    for _ in range(2):
        a @ w
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ w
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2.0 * rows * d_in * d_out * n / (time.perf_counter() - t0) / 1e9


# --------------------------------------------------------------------------- projection (fresh process)
BERT_BASE = {"layers": 12, "d": 768, "d_ff": 3072, "heads": 12}


def random_bert(out: pathlib.Path, shape: dict) -> str:
    """A random-weight BERT of ``shape`` with the bundled tokenizer (BERT's uncased vocabulary), saved to ``out``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    _, source = resolve_model_path(None)
    tok = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=shape["d"], num_hidden_layers=shape["layers"],
                     num_attention_heads=shape["heads"], intermediate_size=shape["d_ff"])
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def project_main(args) -> dict:
    """--project-only: every neuron and the dictionaries' features of --dict-dir on the model --dict-model over
    the first --projection-docs documents: per-unit memory (RSS the empty state takes), the formula, tokens/s."""
    device = resolve_device(args.device)
    model = load_model(args.dict_model, device=device)
    model.attach(args.dict_dir)
    units = ",".join(["L*.ffn.*", "L*.out.*"] + [f"L{layer}.ffn.f*" for layer, _ in model.dictionaries])
    run = new_run(model, ExamplesConfig(token_stats=False), units, open_corpus(None, max_docs=args.projection_docs))
    before = current_rss_mb()
    state = run.new_state()  # before any other state: its memory is fresh pages, not a freed state's reused
    after = current_rss_mb()
    warm_up(run)
    fig, state = timed_pass_into(run, state)
    n_units = sum(len(v) for v in run.names.values())
    features = sum(p.size for p in run.engine.probes.values() if p.sparse)
    neurons = n_units - features
    s = run.settings
    per_neuron = state_bytes(1, s.top, s.slots, run.engine.width, s.parts, False)
    per_feature = state_bytes(1, s.top, s.slots, run.engine.width, s.parts, True)
    enc = run.engine.encode_flops_per_token()
    return {**fig, "pid": os.getpid(), "units": n_units, "features": features, "neurons": neurons,
            "model_flops_per_token": fig["flops_per_token"],
            "achieved_gflops_with_encode": (fig["flops_per_token"] + enc) * fig["tokens"] / fig["seconds"] / 1e9,
            "state_rss_mb": after - before, "state_formula_mb": run.engine.state_bytes() / 2**20,
            "measured_bytes_per_unit": (after - before) * 2**20 / n_units,
            "formula_bytes_per_neuron": per_neuron, "formula_bytes_per_feature": per_feature,
            "encode_flops_per_token": enc,
            "dictionary_mb": sum(sum(t.numel() * t.element_size() for t in d.sae.state_dict().values())
                                 for d in model.dictionaries.values()) / 2**20,
            "model_mb": sum(t.numel() * t.element_size() for t in model.hf.state_dict().values()) / 2**20,
            "peak_rss_mb": rss_mb()}


def record_shapes(run) -> list:
    """Wrap ``run.engine.prepare`` so every batch it prepares appends (contexts, padded length, text tokens) to the
    list returned (``del run.engine.prepare`` restores it)."""
    shapes, prepare = [], run.engine.prepare

    def recording(contexts):
        b = prepare(contexts)
        shapes.append((b.ids.shape[0], b.ids.shape[1], int(b.text.sum())))
        return b

    run.engine.prepare = recording
    return shapes


def timed_pass_into(run, state):
    shapes = record_shapes(run)
    try:
        t0 = time.perf_counter()
        for _, contexts in run.chunks():
            run.process(state, contexts, progress=False)
        seconds = time.perf_counter() - t0
    finally:
        del run.engine.prepare
    return shape_figures(run, shapes, seconds, state), state


def projection_section(args, device, corpus_tokens: int | None) -> dict:
    """(c): measured on a random model of BERT-base's shape with 8x dictionaries on its last --projection-layers
    layers, projected to an 8x dictionary on every layer over the whole corpus."""
    shape = QUICK_BERT if args.quick else BERT_BASE
    with tempfile.TemporaryDirectory(prefix="neurotext-bench-bert-") as tmp:
        model_dir = random_bert(pathlib.Path(tmp) / "model", shape)
        layers = range(shape["layers"] - args.projection_layers, shape["layers"])
        dicts = pathlib.Path(tmp) / "dicts"
        write_dictionaries(model_dir, dicts, layers, args.dict_expansion, DICT_K)
        [m] = in_fresh_processes(["--project-only", "--device", str(device), "--dict-dir", str(dicts),
                                  "--dict-model", model_dir, "--projection-docs", str(args.projection_docs)])
    layers_all = shape["layers"]
    features = layers_all * args.dict_expansion * shape["d_ff"]
    neurons = layers_all * (shape["d_ff"] + shape["d"])
    d_ff = shape["d_ff"]
    state_mb = (features * m["formula_bytes_per_feature"] + neurons * m["formula_bytes_per_neuron"]) / 2**20
    dict_mb = m["dictionary_mb"] / args.projection_layers * layers_all
    flops = m["model_flops_per_token"] + layers_all * 2 * d_ff * args.dict_expansion * d_ff
    gflops = m["achieved_gflops_with_encode"]
    tokens = corpus_tokens or m["tokens"]
    return {"shape": shape, "measured": m, "layers_with_dictionaries": args.projection_layers,
            "projected": {"features": features, "neurons": neurons, "units": features + neurons,
                          "state_mb": state_mb, "dictionaries_mb": dict_mb, "model_mb": m["model_mb"],
                          "memory_mb": state_mb + dict_mb + m["model_mb"] + m["peak_rss_mb"] - m["state_rss_mb"]
                          - m["dictionary_mb"] - m["model_mb"],
                          "flops_per_token": flops, "tokens": tokens, "seconds": flops * tokens / gflops / 1e9,
                          "note": "state by the formula at the measured bytes per unit; the rest of the process "
                                  "(Python, torch, batch buffers) as measured; time at the measured GFLOP/s "
                                  "(encodings counted) over the whole corpus's text tokens"}}


QUICK_BERT = {"layers": 2, "d": 64, "d_ff": 256, "heads": 2}


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
    ap.add_argument("--skip-floor", action="store_true", help="skip the bare-forward floor against neurotext examples")
    ap.add_argument("--skip-dictionaries", action="store_true", help="skip (b), every feature of 8x dictionaries")
    ap.add_argument("--skip-projection", action="store_true", help="skip (c), the BERT-base projection")
    ap.add_argument("--floor-docs", type=int, default=None, help="the floor's documents (default: the whole corpus)")
    ap.add_argument("--dict-expansion", type=int, default=8, help="dictionary width / FFN width (default 8)")
    ap.add_argument("--dict-layers", type=int, default=None,
                    help="(b): dictionaries on the first N layers (default: every layer)")
    ap.add_argument("--dict-docs", type=int, default=None, help="(b)'s documents (default: the whole corpus)")
    ap.add_argument("--projection-docs", type=int, default=300, help="(c)'s sample: the first N documents")
    ap.add_argument("--projection-layers", type=int, default=2,
                    help="(c): dictionaries measured on the last N layers (projected to every layer)")
    ap.add_argument("--floor-only", action="store_true", help="internal: the bare forward (the fresh process)")
    ap.add_argument("--dict-only", type=int, default=None, metavar="TIMES", help="internal: (b)'s fresh process")
    ap.add_argument("--project-only", action="store_true", help="internal: (c)'s fresh process")
    ap.add_argument("--dict-dir", default=None, help="internal: the dictionaries' folder")
    ap.add_argument("--dict-model", default=None, help="internal: the model's directory")
    ap.add_argument("--rss-docs-for-dict", action="store_true", help="internal: (b) over --rss-docs x TIMES")
    ap.add_argument("--no-store", action="store_true", help="internal: (b) without finalizing into a store")
    ap.add_argument("--naive-only", default=None, metavar="OUT",
                    help="internal: run only the naive loop (the fresh process), its top-k table to OUT")
    ap.add_argument("--rss-only", type=int, default=None, metavar="TIMES",
                    help="internal: run only the streaming pass over --rss-docs documents TIMES times over")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    internal = {"naive_only": naive_main, "rss_only": rss_main, "floor_only": floor_main, "dict_only": dict_main,
                "project_only": project_main}
    for flag, fn in internal.items():
        if getattr(args, flag):
            json.dump(fn(args), sys.stdout)
            return {}
    full_docs = None  # the whole corpus
    if args.quick:
        args.units, args.sample_docs, args.rss_docs, full_docs = QUICK_UNITS, 20, 5, 40
        args.floor_docs, args.dict_docs, args.dict_layers, args.dict_expansion = 40, 40, 2, 1
        args.projection_docs, args.projection_layers = 10, 1
    device = resolve_device(args.device)
    model = load_model(None, device=device)
    cfg = ExamplesConfig()
    report = {
        "model": model.name, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": describe(device, cfg.dtype),
        "machine": {"cpu": cpu_name(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "config": asdict(cfg),
        "settings": {"units": args.units, "sample_docs": args.sample_docs, "rss_docs": args.rss_docs,
                     "floor_docs": args.floor_docs, "dict_docs": args.dict_docs, "dict_layers": args.dict_layers,
                     "dict_expansion": args.dict_expansion, "dict_k": DICT_K, "projection_docs": args.projection_docs,
                     "projection_layers": args.projection_layers,
                     "rss_times": RSS_TIMES, "full_docs": full_docs, "top_k_compared": TOP_K, "quick": args.quick,
                     "neurotext_compile": os.environ.get("NEUROTEXT_COMPILE", "1")},
        "warmup": "before each timed pass, one batch (the corpus's first) through forward and fold, untimed: it "
                  "compiles the reduction and the layers' pieces (torch.compile on the CPU) and warms the kernels; "
                  "every timed batch then runs the layers compiled, as a pass runs the batches after the corpus's "
                  f"first {COMPILE_FROM} contexts",
        "targets": TARGETS,
    }

    engine, fp32_top = engine_section(model, args, full_docs, device)
    report["settings"]["reduce_compiled"] = engine.pop("reduce_compiled")
    report["settings"]["layer_pieces_compiled"] = engine.pop("layers_compiled")
    report.update(engine)
    sample = engine["engine"]["sample"]
    if not args.skip_bf16:
        report["bfloat16"] = bf16_section(model, args, sample, fp32_top)
    if not args.skip_naive:
        report["naive"] = naive_section(args, device, sample, fp32_top)
        report["speedup"] = sample["tokens_per_s"] / report["naive"]["tokens_per_s"]
    if not args.skip_rss:
        report["rss"] = rss_section(args, device)
    if not args.skip_floor:
        report["floor"] = floor = floor_section(args, device)
        # the bare forward's own throughput (its loop, without start-up) against the same roofline
        floor["floor"]["roofline_fraction"] = floor["floor"]["achieved_gflops"] / report["matmul_gflops"]
        floor["floor"]["forward_only_roofline_fraction"] = (floor["floor"]["forward_only_gflops"]
                                                            / report["matmul_gflops"])
    if not args.skip_dictionaries:
        report["dictionaries"] = dictionary_section(args, device)
    if not args.skip_projection:
        tokens = report["engine"]["full"]["tokens"] if "full" in report["engine"] else None
        report["projection"] = projection_section(args, device, tokens)
    dic = report.get("dictionaries")
    report["meets_targets"] = {
        "roofline_fraction": report["roofline_fraction"] >= TARGETS["roofline_fraction"],
        "speedup": report["speedup"] >= TARGETS["speedup"] if "speedup" in report else None,
        "rss": (report["rss"]["growth"] < TARGETS["rss_growth"]
                and report["rss"][f"{RSS_TIMES}x"]["peak_rss_mb"] < TARGETS["rss_mb"]) if "rss" in report else None,
        "floor_ratio": report["floor"]["ratio"] <= TARGETS["floor_ratio"] if "floor" in report else None,
        "dict_rss_mb": dic["peak_rss_mb"] <= TARGETS["dict_rss_mb"] if dic else None,
        "dict_rss_growth": dic["rss"]["growth"] <= TARGETS["dict_rss_growth"] if dic else None,
        "dict_roofline_fraction": dic["roofline_fraction"] >= TARGETS["dict_roofline_fraction"] if dic else None,
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
