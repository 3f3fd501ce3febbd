"""Phrase search: the real token sequences of length n that maximize a neuron, by batched coordinate search.

The input is ``[CLS] t1 ... tn [SEP]`` (decoders: ``BOS t1 ... tn``) with real vocabulary tokens t1..tn,
and a row's score is the neuron's reported activation (post-activation for ffn) at the best of the
positions t1..tn. Each iteration follows greedy coordinate gradient (GCG, Zou et al. 2023, "Universal and
Transferable Adversarial Attacks on Aligned Language Models"), turned to maximization:

1. the gradient of the score with respect to the one-hot input at every position, taken through the
   embedding matrix (``d score / d onehot[i, v] = E[v] . d score / d x_i``), gives for every position
   the ``candidates`` tokens whose first-order gain is largest;
2. ``swaps`` single-position swaps drawn from them are evaluated exactly (one batched forward pass);
3. the best swap is kept if it beats the row's current phrase (greedy ascent: the phrase never gets worse).

A row is one (neuron, start); its random draws come from a generator keyed by (seed, neuron, start,
length), so a neuron's phrase never depends on the batch it runs in, and a seed fixes the result. A row
stops after ``patience`` iterations without improvement (a local optimum among the sampled swaps). For
ffn, the gradient is taken on the pre-activation at the best position (GELU is flat for negative inputs,
as in feature textualization); the reported score is the post-activation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..errors import NeurotextError
from .optimize import row_generator

_UNUSED = re.compile(r"^(\[unused\d+\]|<unused\d+>)$")


@dataclass
class PhraseConfig:
    """Phrase-search settings; written next to every result (defaults chosen by measurement, see docs/cli/phrase.md)."""

    lengths: tuple[int, ...] = (1, 2, 4, 8)  # phrase lengths n; 1 = the exhaustive vocabulary scan
    iters: int = 32  # coordinate-search iterations per length (at most; rows stop early, see patience).
    #                  Measured on 6 bundled FFN neurons, length 4: 16 and 32 gave the same phrases (every
    #                  start had stopped), so 32 is a ceiling, not a cost
    candidates: int = 32  # top-C tokens per position from the gradient (GCG's top-k)
    swaps: int = 32  # single-position swaps evaluated exactly per row and iteration (GCG's batch)
    starts: int = 2  # starts per neuron: the scan's n best tokens, the best token n times, then random
    patience: int = 4  # a row stops after this many iterations without improvement
    seed: int = 0  # with neuron, start and length, fixes each row's random draws
    include_special: bool = False  # allow [CLS], [SEP], [PAD], [MASK], [UNK], [unused...] in phrases
    batch_size: int = 4096  # sequences per forward pass (memory bound, not a result setting)

    def __post_init__(self):
        self.lengths = tuple(self.lengths)
        for name in ("iters", "candidates", "swaps", "starts", "patience", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise NeurotextError(f"{name} must be a positive integer, got {v!r}")
        if not self.lengths:
            raise NeurotextError("lengths must name at least one phrase length, e.g. 1,2,4,8")
        for n in self.lengths:
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_LENGTH:
                raise NeurotextError(f"phrase lengths must be integers 1-{MAX_LENGTH}, got {n!r}")
        if len(set(self.lengths)) != len(self.lengths):
            raise NeurotextError(f"phrase lengths repeat: {','.join(map(str, self.lengths))}")
        self.lengths = tuple(sorted(self.lengths))


MAX_LENGTH = 64  # longest phrase searched (the template must fit the model's positions too)


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` -> (1, 2, 4, 8); a bad value is a one-line error naming it."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise NeurotextError(f"phrase lengths are comma-separated integers 1-{MAX_LENGTH}, got {part!r} "
                                 f"in {text!r}") from None
    return PhraseConfig(lengths=tuple(out)).lengths


def allowed_tokens(model, include_special: bool = False) -> torch.Tensor:
    """(V,) bool: the tokens a phrase may use. Without ``include_special``, the tokenizer's special
    tokens ([CLS], [SEP], [PAD], [MASK], [UNK], ...) and placeholders such as ``[unused12]`` are excluded."""
    v = model.embeddings.shape[0]
    ok = torch.ones(v, dtype=torch.bool)
    if not include_special:
        for i in model.tokenizer.all_special_ids:
            if 0 <= i < v:
                ok[i] = False
        for i, t in enumerate(model.tokens):
            if t is None or _UNUSED.match(t):
                ok[i] = False
    if not ok.any():
        raise NeurotextError(f"{model.name}: no vocabulary token is allowed in a phrase")
    return ok.to(model.device)


@dataclass
class PhraseTrace:
    """Best phrase of one length for each of n neurons."""

    ids: torch.Tensor  # (N, n) token ids
    value: torch.Tensor  # (N,) reported activation at the best position
    position: torch.Tensor  # (N,) best position, 0-based in the whole sequence ([CLS] = 0)
    curve: list[list[float]] = field(default_factory=list)  # per neuron: its best start's score per iteration


class PhraseSearch:
    """Batched phrase search at one (layer, site) of a model.

    Args:
        model: a :class:`neurotext.model.adapters.Model`.
        layer, site: the target point.
        config: :class:`PhraseConfig`.
    """

    def __init__(self, model, layer: int, site: str, config: PhraseConfig, allowed: torch.Tensor | None = None):
        self.model, self.layer, self.site, self.cfg = model, layer, site, config
        self.allowed = allowed_tokens(model, config.include_special) if allowed is None else allowed  # (V,)
        self._allowed_ids = self.allowed.nonzero()[:, 0]  # (V_ok,)

    # ------------------------------------------------------------------ exact evaluation
    def _scores(self, acts, units: torch.Tensor, b: int, n: int):
        """(objective, reported) values (B, n) of each row's unit at the span's positions."""
        idx = units.repeat_interleave(n).view(-1, 1)  # (B*n, 1)
        pre = acts.units(idx)  # (B*n, 1)
        return pre.view(b, n), acts.reported(idx, pre).view(b, n)

    @torch.no_grad()
    def evaluate(self, ids: torch.Tensor, units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score phrases exactly: ids (B, n), units (B,) -> (best reported activation (B,), its span index (B,))."""
        emb = self.model.embeddings
        vals, where = [], []
        step = self.cfg.batch_size
        for s in range(0, len(ids), step):
            chunk = ids[s : s + step]
            b, n = chunk.shape
            acts = self.model.capture_span(emb[chunk].float(), self.layer, self.site)
            _, rep = self._scores(acts, units[s : s + step], b, n)
            v, p = rep.max(dim=1)  # (b,), first maximum on ties
            vals.append(v)
            where.append(p)
        return torch.cat(vals), torch.cat(where)

    # ------------------------------------------------------------------ gradient candidates
    def _top_candidates(self, ids: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Top-C tokens per position by the one-hot gradient: ids (B, n) -> (B, n, C)."""
        emb = self.model.embeddings.float()  # (V, d_emb)
        c = min(self.cfg.candidates, len(self._allowed_ids))
        out = []
        rows = max(1, self.cfg.batch_size // (4 * ids.shape[1]))  # bounds the (rows, n, V) gradient block
        for s in range(0, len(ids), rows):
            chunk, u = ids[s : s + rows], units[s : s + rows]
            b, n = chunk.shape
            x = emb[chunk].clone().requires_grad_(True)  # (b, n, d_emb)
            with torch.enable_grad():
                acts = self.model.capture_span(x, self.layer, self.site)
                pre, rep = self._scores(acts, u, b, n)  # (b, n)
                best = rep.detach().argmax(dim=1, keepdim=True)  # (b, 1)
                pre.gather(1, best).sum().backward()
            g = x.grad @ emb.T  # (b, n, V): d score / d onehot
            g[..., ~self.allowed] = -float("inf")
            out.append(g.topk(c, dim=2).indices)  # (b, n, C)
        return torch.cat(out)

    # ------------------------------------------------------------------ search
    def starts(self, keys: list[str], best_ids: torch.Tensor, n: int) -> torch.Tensor:
        """Starting phrases (N*S, n), starts adjacent: start 0 = the neuron's n best allowed scan tokens in
        order, start 1 = its best token n times, the others random allowed tokens (row generators).

        Args:
            keys: one per neuron (its canonical name).
            best_ids: (N, K) each neuron's best allowed tokens from the vocabulary scan, best first.
        """
        s = self.cfg.starts
        out = torch.empty(len(keys) * s, n, dtype=torch.long)
        pool = self._allowed_ids.cpu()
        for i, key in enumerate(keys):
            top = best_ids[i].cpu()
            for j in range(s):
                row = i * s + j
                if j == 0:
                    out[row] = top[torch.arange(n) % len(top)]
                elif j == 1:
                    out[row] = top[0]
                else:
                    g = row_generator(self.cfg.seed, f"{key}|phrase-start|{n}|{j}")
                    out[row] = pool[torch.randint(len(pool), (n,), generator=g)]
        return out.to(self.model.device)

    def run(self, keys: list[str], units: torch.Tensor, best_ids: torch.Tensor, n: int) -> PhraseTrace:
        """Search phrases of length n (> 1) for N neurons at once.

        Args:
            keys: neuron names (N,), which key the per-row random generators.
            units: (N,) the neurons' units at this (layer, site).
            best_ids: (N, K) the neurons' best allowed tokens from the vocabulary scan, best first.
            n: phrase length.

        Returns:
            :class:`PhraseTrace` with each neuron's best phrase over its starts.
        """
        cfg, dev = self.cfg, self.model.device
        s, k = cfg.starts, cfg.swaps
        units_r = units.repeat_interleave(s)  # (R,)
        ids = self.starts(keys, best_ids, n)  # (R, n)
        val, where = self.evaluate(ids, units_r)  # (R,)
        r = len(ids)
        gens = [row_generator(cfg.seed, f"{keys[i // s]}|phrase|{n}|{i % s}") for i in range(r)]
        stall = torch.zeros(r, dtype=torch.long)
        curve = torch.full((cfg.iters + 1, r), float("nan"))
        curve[0] = val.cpu()
        for it in range(cfg.iters):
            active = (stall < cfg.patience).nonzero()[:, 0]  # (Ra,)
            if len(active) == 0:
                curve[it + 1 :] = val.cpu()
                break
            act_dev = active.to(dev)
            top = self._top_candidates(ids[act_dev], units_r[act_dev])  # (Ra, n, C)
            c = top.shape[2]
            cand = ids[act_dev].repeat_interleave(k, dim=0).view(len(active), k, n).clone()  # (Ra, K, n)
            for a, row in enumerate(active.tolist()):
                g = gens[row]
                offset = int(torch.randint(n, (1,), generator=g))
                pos = (offset + torch.arange(k)) % n  # (K,) positions spread evenly over the phrase
                pick = torch.randint(c, (k,), generator=g)  # (K,) which of the top-C tokens
                cand[a, torch.arange(k), pos.to(dev)] = top[a, pos.to(dev), pick.to(dev)]
            cv, cw = self.evaluate(cand.view(-1, n), units_r[act_dev].repeat_interleave(k))
            cv, cw = cv.view(-1, k), cw.view(-1, k)
            best_v, best_k = cv.max(dim=1)  # (Ra,)
            better = best_v > val[act_dev]  # (Ra,)
            upd = act_dev[better]
            ids[upd] = cand[better, best_k[better]]
            val[upd] = best_v[better]
            where[upd] = cw[better, best_k[better]]
            stall[active] += 1
            stall[active[better.cpu()]] = 0
            curve[it + 1] = val.cpu()
        n_neurons = len(keys)
        winner = val.view(n_neurons, s).argmax(dim=1)  # (N,)
        rows = torch.arange(n_neurons, device=dev) * s + winner
        return PhraseTrace(
            ids=ids[rows], value=val[rows], position=where[rows] + self.model.x_pos,
            curve=[curve[:, int(row)].tolist() for row in rows.cpu()],
        )
