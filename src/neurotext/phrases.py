"""Real text for a neuron: the best real token sequences of each length, beside FT and the best single token.

Feature textualization finds vectors that reach far higher activations than any real word; one token
in ``[CLS] t [SEP]`` is the least real text can do. For each neuron and length n this finds the n real
vocabulary tokens that maximize the neuron's activation in ``[CLS] t1 ... tn [SEP]`` (decoder LMs:
``BOS t1 ... tn``) at the best of the positions t1..tn: n = 1 exactly (the vocabulary scan), n > 1 by the
batched coordinate search of :mod:`neurotext.engine.phrase` (GCG, Zou et al. 2023).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .display.notebook import Results
from .engine.optimize import FTConfig
from .engine.phrase import PhraseConfig, PhraseSearch, allowed_tokens
from .engine.scan import ScanCache, tqdm_disable
from .errors import NeurotextError
from .model.adapters import Model, load_model
from .model.names import Neuron
from .textualize import name_fields, resolve_neurons

NEURONS_PER_BATCH = 64  # neurons whose searches share one batch (rows = neurons x starts)
START_TOKENS = 16  # best allowed scan tokens kept per neuron for the starts


@dataclass
class PhraseResult:
    """The best real phrases of one neuron.

    ``phrases`` holds one object per length: ``{"length", "tokens": [{"token", "id"}], "text" (decoded),
    "activation" (post-activation for ffn), "position" (0-based in the whole input, [CLS] or BOS = 0),
    "curve" (the winning start's score at every iteration; empty for length 1, which is exact)}``.
    """

    neuron: str
    model: str
    phrases: list[dict]
    best_phrase: dict  # the phrase of highest activation over the lengths run (without its curve)
    best_token_activation: float  # the best allowed single token's activation (exhaustive scan)
    ft_activation: float | None = None  # the FT vector's activation, where an FT result is at hand
    seed: int = 0
    seconds: float = 0.0  # this neuron's share of its batches' wall time, scan excluded
    settings: dict = field(default_factory=dict)
    token_kind: str = ""  # how the tokens are shown (neurotext.model.tokens.KINDS); "" = unknown, detected
    model_type: str = ""  # the model's config.model_type (how a card words the template); "" = unknown

    def to_dict(self, curve: bool = True) -> dict:
        d = asdict(self)
        if not curve:
            for p in d["phrases"]:
                p.pop("curve", None)
        return d

    def to_row(self) -> dict:
        """The result as the phrase columns of a store row (:data:`neurotext.store.layout.PHRASE_COLUMNS`) with the
        neuron's name, layer, site and unit; :func:`neurotext.store.row_to_phrases` inverts it."""
        ph = self.phrases
        return {
            **name_fields(self.neuron),
            "phrase_lengths": [d["length"] for d in ph], "phrase_texts": [d["text"] for d in ph],
            "phrase_tokens": [[t["token"] for t in d["tokens"]] for d in ph],
            "phrase_ids": [[t["id"] for t in d["tokens"]] for d in ph],
            "phrase_activations": [d["activation"] for d in ph], "phrase_positions": [d["position"] for d in ph],
            "phrase_curves": [d["curve"] for d in ph],
            "best_phrase": self.best_phrase["text"], "best_phrase_activation": self.best_phrase["activation"],
            "best_phrase_length": self.best_phrase["length"], "phrase_token_activation": self.best_token_activation,
        }

    def _repr_html_(self) -> str:
        """In Jupyter: the phrases section of the neuron's card in the atlas (:mod:`neurotext.display.notebook`)."""
        from .display.notebook import phrases_html

        return phrases_html(self)


class Phraser:
    """Phrase search for one model; holds the model, the settings and the scan cache.

    Example:
        >>> [r] = Phraser().run("L3.ffn.42")
        >>> [(p["length"], p["text"], p["activation"]) for p in r.phrases]
    """

    def __init__(self, model: Model | str | None = None, config: PhraseConfig | None = None, cache_dir=None,
                 progress: bool | None = None, scans: ScanCache | None = None):
        self.model = model if isinstance(model, Model) else load_model(model)
        self.config = config or PhraseConfig()
        self.progress = progress
        self.scans = scans or ScanCache(self.model, cache_dir, progress)
        self.allowed = allowed_tokens(self.model, self.config.include_special)  # (V,)

    def run(self, neurons, ft: dict[str, float] | None = None) -> Results:
        """Phrases for neurons (specs or :class:`Neuron`), in (layer, site, unit) order, as a list that displays
        itself in Jupyter (:class:`neurotext.display.notebook.Results`).

        Args:
            ft: optional FT activations by canonical neuron name, reported as ``ft_activation``.
        """
        parsed = resolve_neurons(self.model, neurons)
        groups: dict[tuple[int, str], list[Neuron]] = {}
        for n in parsed:
            groups.setdefault((n.layer, n.site), []).append(n)
        self.scans.prefetch(max(layer for layer, _ in groups))
        out = []
        bar = tqdm(total=len(parsed), desc="phrases", unit="neuron", disable=tqdm_disable(self.progress))
        for (layer, site), group in groups.items():
            for i in range(0, len(group), NEURONS_PER_BATCH):
                chunk = group[i : i + NEURONS_PER_BATCH]
                out += self._run_batch(layer, site, chunk, ft or {})
                bar.update(len(chunk))
        bar.close()
        return Results(out)

    def best_allowed(self, layer: int, site: str, units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's best allowed single tokens, best first: (ids, activations), each (N, START_TOKENS).

        From the cached vocabulary scan; where its kept list holds too few allowed tokens (a unit driven
        hardest by special tokens) the allowed vocabulary is scanned again for those units."""
        scan = self.scans.get(layer, site)
        model, k = self.model, min(START_TOKENS, int(self.allowed.sum()))
        ids = scan.top_ids[units.cpu()]  # (N, K)
        vals = scan.top_vals[units.cpu()]
        ok = self.allowed.cpu()[ids]  # (N, K)
        out_ids = torch.empty(len(units), k, dtype=torch.long)
        out_vals = torch.empty(len(units), k)
        missing = []
        for i in range(len(units)):
            if int(ok[i].sum()) >= k:
                out_ids[i], out_vals[i] = ids[i][ok[i]][:k], vals[i][ok[i]][:k]
            else:
                missing.append(i)
        if missing:
            pool = self.allowed.nonzero()[:, 0]  # (V_ok,)
            u = units[missing].cpu()
            best_v = torch.full((len(missing), 0), -float("inf"))
            best_i = torch.empty((len(missing), 0), dtype=torch.long)
            with torch.no_grad():
                for s in range(0, len(pool), 2048):
                    p = pool[s : s + 2048]
                    acts = model.capture(model.embeddings[p].float(), [(layer, site)])[(layer, site)]
                    rep = acts.reported_all()[:, u.to(model.device)].T.cpu()  # (M, b)
                    best_v = torch.cat([best_v, rep], dim=1)
                    best_i = torch.cat([best_i, p.cpu().expand(len(missing), -1)], dim=1)
                    top = best_v.topk(min(k, best_v.shape[1]), dim=1)
                    best_v, best_i = top.values, best_i.gather(1, top.indices)
            for j, i in enumerate(missing):
                out_ids[i], out_vals[i] = best_i[j], best_v[j]
        return out_ids, out_vals

    def _run_batch(self, layer: int, site: str, neurons: list[Neuron], ft: dict) -> list[PhraseResult]:
        model, cfg = self.model, self.config
        t0 = time.perf_counter()
        units = torch.tensor([n.unit for n in neurons], device=model.device)  # (N,)
        keys = [n.name for n in neurons]
        best_ids, _ = self.best_allowed(layer, site, units)  # (N, K)
        search = PhraseSearch(model, layer, site, cfg, self.allowed)
        per_length = {}
        for length in cfg.lengths:
            if length == 1:
                ids = best_ids[:, :1].to(model.device)  # (N, 1): exact, from the scan
                val, where = search.evaluate(ids, units)
                per_length[1] = (ids, val, where + model.x_pos, [[] for _ in neurons])
            else:
                tr = search.run(keys, units, best_ids, length)
                per_length[length] = (tr.ids, tr.value, tr.position, tr.curve)
        tok_val, _ = search.evaluate(best_ids[:, :1].to(model.device), units)  # (N,)
        seconds = (time.perf_counter() - t0) / len(neurons)
        settings = {k: v for k, v in asdict(cfg).items() if k != "batch_size"}
        out = []
        for i, n in enumerate(neurons):
            phrases = []
            for length, (ids, val, pos, curve) in per_length.items():
                row = [int(t) for t in ids[i].tolist()]
                toks = [model.tokens[t] for t in row]
                phrases.append({
                    "length": length,
                    "tokens": [{"token": t, "id": j} for t, j in zip(toks, row)],
                    "text": model.tokenizer.convert_tokens_to_string(toks),
                    "activation": float(val[i]),
                    "position": int(pos[i]),
                    "curve": curve[i],
                })
            best = max(phrases, key=lambda p: p["activation"])
            out.append(PhraseResult(
                neuron=n.name, model=model.name, phrases=phrases,
                best_phrase={k: v for k, v in best.items() if k != "curve"},
                best_token_activation=float(tok_val[i]), ft_activation=ft.get(n.name), seed=cfg.seed,
                seconds=seconds, settings=settings, token_kind=model.token_kind, model_type=model.model_type,
            ))
        return out


def find_phrases(neurons, model: Model | str | None = None, with_ft: bool | FTConfig = False,
                 progress: bool | None = False, cache_dir=None, **config) -> Results:
    """The best real phrases of each length for neurons, in one call.

    Args:
        neurons: a spec such as ``"L3.ffn.42"`` or a list of them.
        model: a loaded :class:`Model`, a hub name (local cache only), a directory, or None (bundled).
        with_ft: also run feature textualization (True: default settings, or an :class:`FTConfig`) and
            report each neuron's ``ft_activation``.
        **config: :class:`PhraseConfig` fields: lengths, iters, candidates, swaps, starts, patience, seed,
            include_special.

    Returns:
        One :class:`PhraseResult` per neuron.
    """
    try:
        cfg = PhraseConfig(**config)
    except TypeError as e:
        raise NeurotextError(f"unknown setting: {e}") from e
    ph = Phraser(model, cfg, cache_dir=cache_dir, progress=progress)
    ft = None
    if with_ft is not False:
        from .textualize import Textualizer

        ft_cfg = with_ft if isinstance(with_ft, FTConfig) else FTConfig(seed=cfg.seed)
        tx = Textualizer(ph.model, ft_cfg, cache_dir=cache_dir, progress=progress)
        tx.scans = ph.scans
        ft = {r.neuron: r.activation for r in tx.run(neurons)}
    return ph.run(neurons, ft)
