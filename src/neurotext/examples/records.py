"""One neuron's real text as a record: :class:`NeuronExamples`, and the table rows it is made from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pyarrow as pa

from ..engine.contexts import PARTS


@dataclass
class NeuronExamples:
    """One neuron's real text: its top contexts, range and random samples, and statistics."""

    neuron: str
    model: str
    corpus: dict  # {"name", "source", "fingerprint"}
    contexts: int  # contexts seen (both parts)
    tokens: int  # text tokens seen
    stats: dict  # {"count", "mean", "std", "max", "share_positive", "histogram", "context_histogram", "parts"}
    top: list[dict]  # best first
    ranges: list[dict]  # [{"range", "lo", "hi", "contexts", "examples"}], lowest range first
    random: list[dict]  # by sampling key
    split: dict = field(default_factory=dict)  # {"test_share", "seed", "train": {...}, "test": {...}}
    token_stats: dict | None = None  # {"omega_squared", "omega_squared_permuted", "distinct", "lookup": [...]}
    settings: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        """In Jupyter: the real-text section of the neuron's atlas page (:mod:`neurotext.display.notebook`)."""
        from ..display.notebook import examples_html

        return examples_html(self)

    def to_dict(self, parts: bool = False) -> dict:
        """JSON-ready; ``parts``: also the top and random contexts of the train and test parts."""
        d = asdict(self)
        if not parts:
            for p in PARTS:
                if p in d["split"]:
                    d["split"][p] = {k: v for k, v in d["split"][p].items() if k not in ("top", "random")}
        return d


def _join(row: dict, contexts: dict) -> dict:
    """A stored example joined with its context: the record of the module docstring."""
    c = contexts[row["context"]]
    return {"text": c["text"], "tokens": c["tokens"], "ids": c["ids"], "activations": row["activations"],
            "position": row["position"], "activation": float(row["activation"]), "doc": c["doc"],
            "context": row["context"], "part": c["part"], "spans": c["spans"]}


def row_to_examples(row: dict, contexts: dict, model: str, corpus: dict, settings: dict) -> NeuronExamples:
    """A results-table row and the contexts table ({context: row}) -> :class:`NeuronExamples`."""
    def ex(name):
        return [_join(e, contexts) for e in row[name] or []]

    hist = dict(row["histogram"] or {}, positions=row["histogram_positions"], contexts=row["histogram_contexts"],
                sample=f"every text position of the contexts whose sampling key is in the lowest "
                       f"1/{settings.get('hist_every', '?')} (a uniform sample of contexts)")
    stats = {"count": row["tokens"], "mean": row["mean"], "std": row["std"], "max": row["max"],
             "share_positive": row["share_positive"], "histogram": hist,
             "context_histogram": dict(row["context_histogram"] or {}, contexts=row["contexts"]),
             "parts": {p: {"count": row[f"{p}_tokens"], "max": row[f"{p}_max"]} for p in PARTS}}
    split = {"test_share": settings.get("test_share"), "seed": settings.get("split_seed")}
    for p in PARTS:
        split[p] = {"contexts": row[f"{p}_contexts"], "tokens": row[f"{p}_tokens"], "max": row[f"{p}_max"],
                    "top": ex(f"top_{p}"), "random": ex(f"random_{p}")}
    ranges = [{**{k: g[k] for k in ("range", "lo", "hi", "nominal", "contexts")},
               "examples": [_join(e, contexts) for e in g["examples"] or []]} for g in row["ranges"] or []]
    ts = None
    if row.get("omega_squared") is not None or row.get("lookup"):
        ts = {"omega_squared": row["omega_squared"], "omega_squared_permuted": row["omega_squared_permuted"],
              "distinct": row["distinct_tokens"], "positions": row["tokens"], "lookup": row["lookup"] or []}
    return NeuronExamples(neuron=row["neuron"], model=model, corpus=corpus, contexts=row["contexts"],
                          tokens=row["tokens"], stats=stats, top=ex("top"), ranges=ranges, random=ex("random"),
                          split=split, token_stats=ts, settings=settings)


def tables_to_examples(tables: dict, contexts: pa.Table, model: str, corpus: dict, settings: dict) -> list:
    """Results tables and their contexts table -> :class:`NeuronExamples`, in the tables' order."""
    ctx = {r["context"]: r for r in contexts.to_pylist()}
    return [row_to_examples(r, ctx, model, corpus, settings) for t in tables.values() for r in t.to_pylist()]
