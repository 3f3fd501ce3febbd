"""Textualization: optimize FT vectors for neurons, map them to tokens, and measure how word-like they are.

For every neuron this produces the fields of DESIGN.md section 3: the FT vector and its activation,
its nearest tokens by cosine, what survives when it is replaced by its nearest token (``retention``),
and the best real tokens from the exhaustive vocabulary scan with their overlap.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .display.notebook import Results
from .engine import memory, objectives, stability
from .engine.directions import DIRECTION_SITES, model_site, projected, vocabulary_projection
from .engine.optimize import FTConfig, best_of_restarts, initial_points
from .engine.scan import SCAN_TOP, ScanCache, tqdm_disable
from .engine.writes import WritesCache, direction_writes, top_writes
from .errors import NeurotextError
from .model.adapters import Model, load_model
from .model.dictionary import neuron_support
from .model.names import Neuron, is_feature_site, parse_name

OVERLAP_K = 10  # overlap_at_10 compares the FT top-10 nearest tokens with the scan's top-10
_SITE = re.compile(r"L(\d+)\.([a-z]+(?:\.f)?)")


def name_fields(name: str) -> dict:
    """``neuron``, ``layer``, ``site`` and ``unit`` of a store row from a result's name: ``L3.ffn.42`` (a feature
    ``L3.ffn.f12``: site ``ffn.f``), or for a direction (``L3.out@probe.npy#0``) its layer and site with ``unit``
    None."""
    n = parse_name(name)
    if n is not None:
        return {"neuron": name, "layer": n.layer, "site": n.site, "unit": n.unit}
    m = _SITE.match(name)
    if m is None:
        return {"neuron": name, "layer": None, "site": None, "unit": None}
    return {"neuron": name, "layer": int(m.group(1)), "site": m.group(2), "unit": None}


@dataclass
class NeuronResult:
    """Everything measured for one neuron (DESIGN.md section 3)."""

    neuron: str
    model: str
    activation: float  # reported value at x's position (post-activation for ffn, hidden value for out)
    pre_activation: float  # ffn: value before the activation function; out: same as activation
    vector: np.ndarray  # (d_emb,) float32, the FT vector x
    nearest: list[dict]  # best first: {"token", "id", "cosine"}
    nearest_activation: float  # activation with x replaced by its nearest token
    retention: float | None  # nearest_activation / activation; None when activation <= 0
    best_tokens: list[dict]  # best first: {"token", "id", "activation"} from the vocabulary scan
    overlap_at_10: float  # share of the FT top-10 nearest tokens also in the scan's top-10
    steps: int
    seconds: float  # wall time of this neuron's share of its optimizer batch, scan excluded
    seed: int
    restarts: int
    curve: list[float] = field(default_factory=list)  # best restart's objective at every step
    # every restart's optimum, best first: {"restart", "activation", "pre_activation", "nearest", "vector"}
    restarts_detail: list[dict] = field(default_factory=list)
    # agreement of the counted restarts (engine.stability.measure); None for results from older stores
    stability: dict | None = None
    # the normalized mean of the counted restarts' optima (engine.stability.centroid): {"activation",
    # "pre_activation", "nearest", "restarts"}; None for results from older stores
    centroid: dict | None = None
    promotes: list[dict] = field(default_factory=list)  # what it writes, best first: {"token", "id", "logit"}
    suppresses: list[dict] = field(default_factory=list)  # most negative logits first
    readout: str = ""  # how promotes/suppresses were read out (Model.readout)
    # how the tokens are shown (neurotext.model.tokens.KINDS: "byte-level", ...); "" = unknown, detected from them
    token_kind: str = ""
    model_type: str = ""  # the model's config.model_type (how a card words an ffn unit's values); "" = unknown
    # a dictionary feature's neuron support (neurotext.model.dictionary.neuron_support): how many of the site's
    # neurons its encoder and decoder rows spread over; None for a neuron
    support: dict | None = None

    def to_dict(self, vector: bool = True) -> dict:
        d = asdict(self)
        d["vector"] = [float(v) for v in self.vector] if vector else None
        for r in d["restarts_detail"]:
            if vector:
                r["vector"] = [float(v) for v in r["vector"]]
            else:
                r.pop("vector", None)
        return d

    def to_row(self) -> dict:
        """The result as a store row (the columns of :func:`neurotext.store.schema` but the phrases'), Python
        values; a direction's row has ``unit`` None. :func:`neurotext.store.row_to_result` inverts it."""
        def tokens(prefix: str, side: list[dict], key: str) -> dict:  # {token, id, key} dicts -> three columns
            return {f"{prefix}_ids": [d["id"] for d in side], f"{prefix}_tokens": [d["token"] for d in side],
                    f"{prefix}_{key}s": [d[key] for d in side]}

        c = self.centroid
        return {
            **name_fields(self.neuron),
            "activation": self.activation, "pre_activation": self.pre_activation,
            "vector": np.asarray(self.vector, dtype=np.float32),
            "nearest_token": self.nearest[0]["token"], "nearest_cosine": self.nearest[0]["cosine"],
            **tokens("nearest", self.nearest, "cosine"),
            "nearest_activation": self.nearest_activation, "retention": self.retention,
            "best_token": self.best_tokens[0]["token"], "best_activation": self.best_tokens[0]["activation"],
            **tokens("best", self.best_tokens, "activation"),
            "overlap_at_10": self.overlap_at_10, "steps": self.steps, "restarts": self.restarts,
            "seconds": self.seconds, "seed": self.seed, "curve": self.curve,
            "restarts_detail": [{
                "restart": d["restart"], "activation": d["activation"], "pre_activation": d["pre_activation"],
                **tokens("nearest", d["nearest"], "cosine"),
                "vector": np.asarray(d["vector"], dtype=np.float32),
            } for d in self.restarts_detail],
            "stability": self.stability,
            "centroid": None if c is None else {
                "activation": c["activation"], "pre_activation": c["pre_activation"],
                **tokens("nearest", c["nearest"], "cosine"), "restarts": c["restarts"]},
            **tokens("promotes", self.promotes, "logit"), **tokens("suppresses", self.suppresses, "logit"),
            "readout": self.readout, "support": self.support,
        }

    def _repr_html_(self) -> str:
        """In Jupyter: the neuron's card, the same as its page in the atlas (:mod:`neurotext.display.notebook`)."""
        from .display.notebook import result_html

        return result_html(self)


def retention_of(nearest_activation: float, activation: float) -> float | None:
    """nearest_activation / activation, undefined (None) when the FT activation is not positive."""
    if not activation > 0 or not math.isfinite(nearest_activation):
        return None
    return nearest_activation / activation


def resolve_neurons(model: Model, neurons) -> list[Neuron]:
    """Specs (``"L3.ffn.0-9"``) and :class:`Neuron` objects -> the sorted, de-duplicated neurons, validated
    against ``model``; no neurons at all is an error."""
    if isinstance(neurons, (str, Neuron)):
        neurons = [neurons]
    neurons = list(neurons)
    if not neurons:
        raise NeurotextError("no neurons given")
    parsed = [n for n in neurons if isinstance(n, Neuron)]
    specs = [n for n in neurons if not isinstance(n, Neuron)]
    if specs:
        parsed += model.parse(specs)
    return sorted(set(parsed))


class Textualizer:
    """Feature textualization of one model; holds the model, the settings and the scan cache.

    Examples:
        >>> tx = Textualizer()                      # bundled all-MiniLM-L6-v2
        >>> [r] = tx.run("L3.ffn.42")
        >>> r.nearest[0]["token"], r.activation, r.best_tokens[0]["activation"]
    """

    def __init__(self, model: Model | str | None = None, config: FTConfig | None = None,
                 cache_dir=None, progress: bool | None = None):
        self.model = model if isinstance(model, Model) else load_model(model)
        self.config = config or FTConfig()
        if self.config.top > SCAN_TOP:
            raise NeurotextError(f"top must be at most {SCAN_TOP}, got {self.config.top}")
        if self.config.init == "scan" and self.config.restarts > SCAN_TOP:
            raise NeurotextError(f"init 'scan' starts restarts from the scan's best {SCAN_TOP} tokens: "
                                 f"restarts must be at most {SCAN_TOP}, got {self.config.restarts}")
        self.progress = progress
        self._oom = memory.OOMSplitter(log=lambda m: print(m, file=sys.stderr))
        self.scans = ScanCache(self.model, cache_dir, progress)
        self.writes = WritesCache(self.model)
        self.radius = self.model.radius(self.config.percentile)
        emb = self.model.embeddings.float()
        self._unit_emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (V, d_emb)

    # ------------------------------------------------------------------ public
    def run(self, neurons) -> Results:
        """Textualize neurons (specs or :class:`Neuron`); results in (layer, site, unit) order, as a list that
        displays itself in Jupyter (:class:`neurotext.display.notebook.Results`)."""
        parsed = resolve_neurons(self.model, neurons)
        results = []
        groups: dict[tuple[int, str], list[Neuron]] = {}
        for n in parsed:
            groups.setdefault((n.layer, n.site), []).append(n)
        self.scans.prefetch(max(layer for layer, _ in groups))
        bar = tqdm(total=len(parsed), desc="textualize", unit="neuron", disable=tqdm_disable(self.progress))
        for (layer, site), group in groups.items():
            scan = self.scans.get(layer, site)
            per_batch = memory.neurons_per_batch(self.model, layer, self.config)  # fewer where memory is short
            for i in range(0, len(group), per_batch):
                chunk = group[i : i + per_batch]  # out of memory: halved and retried, no neuron lost
                results += self._oom.run(lambda ns, layer=layer, site=site, scan=scan:
                                         self._run_batch(layer, site, ns, scan), chunk)
                bar.update(len(chunk))
        bar.close()
        return Results(results)

    def nearest(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k tokens by cosine to each row of x (N, d_emb): (cosines, ids), each (N, k)."""
        xn = x.float() / x.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (xn @ self._unit_emb.T).topk(k, dim=1)

    def rank_of(self, x: torch.Tensor, ids: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """1-based rank of token ``ids[i]`` among the whole vocabulary by cosine to x[i]: (N,) long.

        Rank 1 means the token is x's nearest token (the first of :meth:`nearest`); ties count in the
        token's favour (rank = 1 + number of tokens strictly closer).
        """
        out = []
        for start in range(0, len(x), chunk):
            xs = x[start:start + chunk].float()
            xn = xs / xs.norm(dim=1, keepdim=True).clamp_min(1e-12)
            cos = xn @ self._unit_emb.T  # (n, V)
            own = cos.gather(1, ids[start:start + chunk].view(-1, 1).to(cos.device))  # (n, 1)
            out.append((cos > own).sum(dim=1) + 1)
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    @torch.no_grad()
    def activations_of(self, layer: int, site: str, x: torch.Tensor, units: torch.Tensor):
        """(pre_activation, activation) of ``units`` (N,) for inputs x (N, d_emb) in the template."""
        acts = self.model.capture(x, [(layer, site)])[(layer, site)]
        idx = units.view(-1, 1)
        pre = acts.units(idx)
        return pre[:, 0], acts.reported(idx, pre)[:, 0]

    # ------------------------------------------------------------------ internals
    def _starts(self, keys: list[str], units: torch.Tensor, scan) -> torch.Tensor:
        """Start of every row (N*r, d_emb), restarts adjacent: random tokens or Gaussians (``initial_points``),
        or with ``init`` "scan" the neuron's r best tokens from the vocabulary scan, best first."""
        cfg, emb = self.config, self.model.embeddings
        if cfg.init != "scan":
            return initial_points(emb, keys, cfg.seed, cfg.init)
        ids = scan.top_ids[units.cpu(), : cfg.restarts].reshape(-1)  # (N*r,)
        return emb[ids.to(emb.device)].float()

    def _run_batch(self, layer: int, site: str, neurons: list[Neuron], scan) -> list[NeuronResult]:
        cfg, model = self.config, self.model
        r = cfg.restarts
        t0 = time.perf_counter()
        keys = [f"{n.name}|{j}" for n in neurons for j in range(r)]  # row = (neuron, restart)
        units = torch.tensor([n.unit for n in neurons], device=model.device)  # (N,)
        x0 = self._starts(keys, units, scan)  # (N*r, d_emb)
        trace = best_of_restarts(model, layer, site, lambda rep: objectives.unit(units.repeat_interleave(rep)),
                                 x0, len(units), self.radius, cfg)
        x, pre, curve = trace.x, trace.value, trace.curve
        if cfg.dtype != "float32" or is_feature_site(site):
            # float32 values at the chosen x, never the low-precision ones; a feature's encoding needs every
            # feature's pre-activation there
            pre, act = self.activations_of(layer, site, x, units)
        else:
            act = model.post(layer, site, pre)
        seconds = (time.perf_counter() - t0) / len(neurons)
        cos, ids = self.nearest(x, cfg.top)  # (N, top)
        _, near_act = self.activations_of(layer, site, model.embeddings[ids[:, 0]].float(), units)
        details, stab, cents = self._restarts(
            lambda xs, rep: self.activations_of(layer, site, xs, units.repeat_interleave(rep)), trace)
        writes = self.writes.get(layer, site)
        support = (neuron_support(model.dictionary(layer, site), [n.unit for n in neurons])
                   if is_feature_site(site) else [None] * len(neurons))
        out = []
        for i, n in enumerate(neurons):
            a = float(act[i])
            na = float(near_act[i])
            near_ids = ids[i].tolist()
            best_ids = scan.top_ids[n.unit, : cfg.top].tolist()
            overlap = len(set(near_ids[:OVERLAP_K]) & set(scan.top_ids[n.unit, :OVERLAP_K].tolist()))
            out.append(NeuronResult(
                neuron=n.name,
                model=model.name,
                activation=a,
                pre_activation=float(pre[i]),
                vector=x[i].detach().cpu().numpy().astype(np.float32),
                nearest=[{"token": model.tokens[t], "id": t, "cosine": float(c)}
                         for t, c in zip(near_ids, cos[i].tolist())],
                nearest_activation=na,
                retention=retention_of(na, a),
                best_tokens=[{"token": model.tokens[t], "id": t, "activation": float(v)}
                             for t, v in zip(best_ids, scan.top_vals[n.unit, : cfg.top].tolist())],
                overlap_at_10=overlap / min(OVERLAP_K, len(near_ids)),
                steps=cfg.steps,
                seconds=seconds,
                seed=cfg.seed,
                restarts=r,
                curve=curve[:, i].tolist(),
                restarts_detail=details[i],
                stability=stab[i],
                centroid=cents[i],
                **self._writes_fields(writes, n.unit),
                token_kind=model.token_kind,
                model_type=model.model_type,
                support=support[i],
            ))
        return out

    def _writes_fields(self, writes, row: int) -> dict:
        """promotes, suppresses and readout of row ``row`` of :class:`Writes`, cut to ``top``."""
        k, tokens = self.config.top, self.model.tokens

        def side(ids, logits):
            return [{"token": tokens[t], "id": t, "logit": float(v)}
                    for t, v in zip(ids[row, :k].tolist(), logits[row, :k].tolist())]

        return dict(promotes=side(writes.promote_ids, writes.promote_logits),
                    suppresses=side(writes.suppress_ids, writes.suppress_logits), readout=writes.readout)

    # ------------------------------------------------------------------ any direction
    def run_directions(self, layer: int, site: str, directions, names: list[str]) -> Results:
        """Textualize directions over the units of (layer, site) like neurons (``objectives.direction``).

        Args:
            site: which values the directions project (:data:`neurotext.engine.directions.DIRECTION_SITES`):
                ``out``, ``ffn`` (post-activations) or ``ffn.pre`` (pre-activations).
            directions: (N, units) array or tensor, one direction per row (probe weights, SAE encoder rows).
            names: one name per row, e.g. ``L3.out@probe.npy#0``; with the seed it fixes each row's starts.

        Returns:
            One :class:`NeuronResult` per row: ``pre_activation`` is the projection FT maximizes, ``activation``
            the projection of the reported activations (they differ only at ``ffn.pre``: post-activations),
            ``best_tokens`` the vocabulary tokens with the highest projection of the reported activations,
            ``promotes``/``suppresses`` what the direction writes (at ``ffn``: through the FFN's output
            projection).
        """
        cfg, model = self.config, self.model
        if not 0 <= layer < model.n_layers or site not in DIRECTION_SITES:
            raise NeurotextError(f"no site L{layer}.{site} in {model.name}: layers 0-{model.n_layers - 1}, "
                                 f"sites {', '.join(DIRECTION_SITES)}")
        base = model_site(site)
        d = torch.as_tensor(np.asarray(directions), dtype=torch.float32, device=model.device)  # (N, U)
        if d.ndim != 2 or d.shape[1] != model.sizes[base] or len(d) != len(names):
            raise NeurotextError(f"directions at L{layer}.{site} must be (N, {model.sizes[base]}) with one name per "
                                 f"row, got {tuple(d.shape)} and {len(names)} names")
        t0 = time.perf_counter()
        r = cfg.restarts
        keys = [f"{name}|{j}" for name in names for j in range(r)]
        x0 = initial_points(model.embeddings, keys, cfg.seed, "token" if cfg.init == "scan" else cfg.init)
        post = site != "ffn.pre"
        trace = best_of_restarts(model, layer, base,
                                 lambda rep: objectives.direction(d.repeat_interleave(rep, 0), reported=post),
                                 x0, len(d), self.radius, cfg)
        x = trace.x
        seconds = (time.perf_counter() - t0) / len(d)

        @torch.no_grad()
        def project(inputs, dirs=d):  # (maximized, reported) projections onto each row's direction
            acts = model.capture(inputs, [(layer, base)])[(layer, base)]
            return (projected(acts, site).float() * dirs).sum(1), (acts.reported_all().float() * dirs).sum(1)

        pre, act = project(x)
        details, stab, cents = self._restarts(lambda xs, rep: project(xs, d.repeat_interleave(rep, 0)), trace)
        cos, ids = self.nearest(x, cfg.top)
        _, near_act = project(model.embeddings[ids[:, 0]].float())
        best_vals, best_ids = vocabulary_projection(model, layer, site, d, max(cfg.top, OVERLAP_K))
        writes = top_writes(model, direction_writes(model, base, layer, d), cfg.top)
        out = []
        for i, name in enumerate(names):
            a, na = float(act[i]), float(near_act[i])
            near_ids = ids[i].tolist()
            overlap = len(set(near_ids[:OVERLAP_K]) & set(best_ids[i, :OVERLAP_K].tolist()))
            out.append(NeuronResult(
                neuron=name, model=model.name, activation=a, pre_activation=float(pre[i]),
                vector=x[i].detach().cpu().numpy().astype(np.float32),
                nearest=[{"token": model.tokens[t], "id": t, "cosine": float(c)}
                         for t, c in zip(near_ids, cos[i].tolist())],
                nearest_activation=na, retention=retention_of(na, a),
                best_tokens=[{"token": model.tokens[t], "id": t, "activation": float(v)}
                             for t, v in zip(best_ids[i, :cfg.top].tolist(), best_vals[i, :cfg.top].tolist())],
                overlap_at_10=overlap / min(OVERLAP_K, len(near_ids)), steps=cfg.steps, seconds=seconds,
                seed=cfg.seed, restarts=r, curve=trace.curve[:, i].tolist(), **self._writes_fields(writes, i),
                restarts_detail=details[i], stability=stab[i], centroid=cents[i], token_kind=model.token_kind,
                model_type=model.model_type,
            ))
        return Results(out)

    def _restarts(self, evaluate, trace):
        """Every restart's optimum (best first), the stability record and the centroid of the counted
        restarts, per neuron (or direction): three lists.

        Args:
            evaluate: ``(x (N*rep, d_emb), rep) -> (pre_activation, activation)``, each (N*rep,), for inputs
                whose rows are the N neurons repeated ``rep`` times (adjacent).
            trace: the :class:`Trace` of :func:`best_of_restarts` (every restart's best x).

        The restarts' values are recomputed in float32 in one forward pass (whatever ``dtype`` the steps
        used), ordered by the optimized quantity (pre-activation for ffn), so the first restart is the
        neuron's headline result.
        """
        cfg, model = self.config, self.model
        n, r, d = trace.restarts_x.shape
        flat = trace.restarts_x.reshape(n * r, d)  # (N*r, d_emb), restarts adjacent
        pre, act = evaluate(flat, r)
        pre, act = pre.view(n, r).cpu(), act.view(n, r).cpu()
        k = max(cfg.top, stability.JACCARD_K)
        cos, ids = self.nearest(flat, k)  # (N*r, k)
        cos, ids = cos.view(n, r, k).cpu(), ids.view(n, r, k).cpu()
        vecs = flat.detach().float().cpu().view(n, r, d)
        details, stabs, cents = [], [], []
        for i in range(n):
            order = sorted(range(r), key=lambda j: -float(pre[i, j]))
            details.append([{
                "restart": j,
                "activation": float(act[i, j]),
                "pre_activation": float(pre[i, j]),
                "nearest": [{"token": model.tokens[t], "id": t, "cosine": float(c)}
                            for t, c in zip(ids[i, j, : cfg.top].tolist(), cos[i, j, : cfg.top].tolist())],
                "vector": vecs[i, j].numpy().astype(np.float32),
            } for j in order])
            stabs.append(stability.measure(vecs[i, order], [ids[i, j].tolist() for j in order],
                                           [float(act[i, j]) for j in order], model.tokens, cfg.stability_tol))
            keep = stability.counted([float(act[i, j]) for j in order], cfg.stability_tol)
            cents.append(stability.centroid(vecs[i, [order[j] for j in keep]]))
        c = torch.stack(cents).to(model.device)  # (N, d_emb)
        c_pre, c_act = evaluate(c, 1)
        c_cos, c_ids = self.nearest(c, cfg.top)
        centroids = [{
            "activation": float(c_act[i]), "pre_activation": float(c_pre[i]),
            "nearest": [{"token": model.tokens[t], "id": t, "cosine": float(v)}
                        for t, v in zip(c_ids[i].tolist(), c_cos[i].tolist())],
            "restarts": stabs[i]["restarts"],
        } for i in range(n)]
        return details, stabs, centroids


def textualize(neurons, model: Model | str | None = None, progress: bool | None = False,
               cache_dir=None, **config) -> Results:
    """Textualize neurons of a model in one call.

    Args:
        neurons: a spec such as ``"L3.ffn.42"``, ``"L0-5.ffn.0-9"``, or a list of them.
        model: a loaded :class:`Model`, a hub name (local cache only), a directory, or None for the
            bundled all-MiniLM-L6-v2.
        progress: show progress bars (None: only on a terminal).
        cache_dir: where vocabulary scans are cached (default ``$NEUROTEXT_CACHE_DIR`` or
            ``~/.cache/neurotext``); False disables the disk cache.
        **config: :class:`FTConfig` fields: steps, restarts, lr, seed, percentile, init, top, batch_size.

    Returns:
        One :class:`NeuronResult` per neuron, in (layer, site, unit) order: a list that shows a table of the
        neurons in Jupyter (each result shows its card).
    """
    try:
        cfg = FTConfig(**config)
    except TypeError as e:
        raise NeurotextError(f"unknown setting: {e}") from e
    return Textualizer(model, cfg, cache_dir=cache_dir, progress=progress).run(neurons)
