"""Batched feature textualization: gradient ascent on x in word-embedding space, many rows at once.

A row is one (neuron, restart). Rows never interact: the loss is the sum of per-row objectives and
Adam is per-coordinate, so each row follows the same trajectory alone or in any batch (up to float
rounding). x is parametrized as ``x = radius * z`` with ``|z| <= 1``: the projection onto the ball of
token-embedding norms is a rescale of z after every step, and the step size ``lr`` is in units of the
ball's radius, so one default works across models whose embeddings differ in scale.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from ..errors import NeurotextError


@dataclass
class FTConfig:
    """Feature-textualization settings; written next to every result."""

    steps: int = 256  # Adam steps per restart
    restarts: int = 4  # independent starts per neuron; the best final activation is kept
    lr: float = 0.02  # Adam step size, in units of the projection radius (x = radius * z)
    seed: int = 0  # with neuron and restart, fixes each row's start
    percentile: float = 99.0  # projection radius = this percentile of token-embedding norms (DESIGN 1.3)
    schedule: str = "cosine"  # learning-rate schedule: "cosine" anneals lr to 0 over the steps
    #                           (large early moves, a precise final climb), "constant" keeps it
    init: str = "token"  # start of each restart: "token" = a random vocabulary token's embedding,
    #                      "normal" = an isotropic Gaussian vector scaled to the median token norm,
    #                      "scan" = restart j starts at the neuron's j-th best token of the vocabulary
    #                      scan (single-neuron textualization only; the scan is computed anyway;
    #                      measured: fewer good basins than random tokens, docs/performance.md)
    prune_at: float = 1.0  # after this share of the steps only each neuron's best restart goes on
    #                        (the others stop: fewer row-steps for the same steps); 1.0 = never prune
    dtype: str = "float32"  # arithmetic of the optimization steps: "bfloat16" runs them under autocast
    #                          (faster where the CPU/GPU has bf16 units); reported values are always
    #                          recomputed in float32 at the chosen x
    top: int = 10  # nearest tokens and best tokens kept per neuron
    stability_tol: float = 0.05  # a restart counts towards stability when its activation is within this
    #                              share of the best restart's (a stuck restart is another question)
    batch_size: int = 2048  # rows (neuron x restart) per optimizer batch

    def __post_init__(self):
        for field in ("steps", "restarts", "top", "batch_size"):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise NeurotextError(f"{field} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise NeurotextError(f"lr must be positive, got {self.lr!r}")
        if not 0 < self.percentile <= 100:
            raise NeurotextError(f"percentile must be in (0, 100], got {self.percentile!r}")
        if not 0 < self.prune_at <= 1:
            raise NeurotextError(f"prune_at must be in (0, 1], got {self.prune_at!r}")
        if not (isinstance(self.stability_tol, (int, float)) and 0 <= self.stability_tol < 1):
            raise NeurotextError(f"stability_tol must be in [0, 1), got {self.stability_tol!r}")
        if self.schedule not in SCHEDULES:
            raise NeurotextError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise NeurotextError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.init not in INITS:
            raise NeurotextError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")

    @property
    def prune_step(self) -> int:
        """The step after which only each neuron's best restart continues (== steps: never)."""
        return self.steps if self.prune_at >= 1 or self.restarts == 1 else max(1, round(self.prune_at * self.steps))


INITS = ("token", "normal", "scan")
SCHEDULES = ("cosine", "constant")
DTYPES = ("float32", "bfloat16")


def row_generator(seed: int, key: str) -> torch.Generator:
    """A generator that depends only on (seed, key): a row's start never depends on its batch."""
    digest = hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def initial_points(embeddings: torch.Tensor, keys: list[str], seed: int, init: str) -> torch.Tensor:
    """One start per row key, in word-embedding space: (B, d_emb)."""
    v, d = embeddings.shape
    out = torch.empty(len(keys), d, dtype=torch.float32)
    median = float(embeddings.float().norm(dim=1).median()) if init == "normal" else 0.0
    for i, key in enumerate(keys):
        g = row_generator(seed, key)
        if init == "token":
            out[i] = embeddings[int(torch.randint(v, (1,), generator=g))].float()
        else:
            z = torch.randn(d, generator=g)
            out[i] = z * (median / z.norm())
    return out.to(embeddings.device)


@dataclass
class Trace:
    """Result of one optimized batch."""

    x: torch.Tensor  # (B, d_emb) best x seen per row
    value: torch.Tensor  # (B,) objective at that x
    curve: torch.Tensor  # (steps + 1, B) objective at every step
    restarts_x: torch.Tensor | None = None  # (B, R, d_emb) every restart's best x (best_of_restarts only)
    restarts_value: torch.Tensor | None = None  # (B, R) its objective value


def _project(z: torch.Tensor) -> None:
    """In place: rescale rows of z (B, d) with norm > 1 onto the unit sphere."""
    z.mul_(z.norm(dim=1, keepdim=True).clamp_min(1.0).reciprocal())


def learning_rate(cfg: FTConfig, step: int) -> float:
    """lr at ``step`` of ``cfg.steps``: constant, or cosine-annealed towards 0."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))


def maximize(model, layer: int, site: str, objective, x0: torch.Tensor, radius: float, cfg: FTConfig,
             steps: int | None = None, step0: int = 0) -> Trace:
    """Gradient ascent of ``objective`` at (layer, site) for a batch of starts.

    Args:
        model: a :class:`neurotext.model.adapters.Model`.
        layer, site: where the objective reads activations; the forward pass stops there.
        objective: callable ``SiteActs -> (B,)``.
        x0: starting points (B, d_emb); projected onto the ball first.
        radius: the ball's radius in word-embedding space.
        cfg: steps and learning rate.
        steps: steps to take in this call (default ``cfg.steps``); with ``step0``, a call can run one
            phase of a longer schedule (the learning rate follows ``learning_rate(cfg, step0 + i)``).

    Returns:
        :class:`Trace` with the best x seen per row (every evaluated x is already projected, so the
        best is a feasible point), its objective value and the whole ascent curve.
    """
    z = (x0.float() / radius).clone()  # (B, d)
    _project(z)
    z.requires_grad_(True)
    steps = cfg.steps if steps is None else steps
    opt = torch.optim.Adam([z], lr=cfg.lr)
    best_val = torch.full((z.shape[0],), -float("inf"), device=z.device)  # (B,)
    best_z = z.detach().clone()  # (B, d)
    curve = torch.empty(steps + 1, z.shape[0])  # (S + 1, B)
    point = (layer, site)
    low = cfg.dtype == "bfloat16"
    for step in range(steps + 1):
        last = step == steps
        with torch.set_grad_enabled(not last), torch.autocast(z.device.type, torch.bfloat16, enabled=low):
            val = objective(model.capture(z * radius, [point])[point]).float()  # (B,)
        v = val.detach()
        curve[step] = v.cpu()
        better = v > best_val
        best_val = torch.where(better, v, best_val)
        best_z[better] = z.detach()[better]
        if last:
            break
        opt.zero_grad(set_to_none=True)
        (-val.sum()).backward()
        opt.param_groups[0]["lr"] = learning_rate(cfg, step0 + step)
        opt.step()
        with torch.no_grad():
            _project(z)
    return Trace(x=best_z * radius, value=best_val, curve=curve)


def best_of_restarts(model, layer: int, site: str, objective, x0: torch.Tensor, n: int, radius: float,
                     cfg: FTConfig) -> Trace:
    """Optimize n groups (neurons, or Q2 unit sets) with ``cfg.restarts`` restarts each and keep each
    group's best restart (successive halving).

    All restarts run ``cfg.prune_step`` steps; then only each group's best restart goes on to
    ``cfg.steps`` (``prune_at`` = 1: never prune).

    Args:
        objective: ``rep -> Objective`` for the n groups, each row repeated ``rep`` times (restarts adjacent).
        x0: starts (n * restarts, d_emb), restarts adjacent.

    Returns:
        :class:`Trace` of the n groups: best x (n, d_emb), its objective value (n,), the winning
        restart's curve (steps + 1, n), and every restart's best x (n, r, d_emb) and value (n, r)
        (a pruned restart's are those of the step where it stopped).
    """
    r = cfg.restarts
    first = maximize(model, layer, site, objective(r), x0, radius, cfg, steps=cfg.prune_step)
    best = first.value.view(n, r).argmax(dim=1)  # (n,)
    rows = torch.arange(n, device=best.device) * r + best  # (n,)
    x, value, curve = first.x[rows], first.value[rows], first.curve[:, rows.cpu()]
    all_x = first.x.detach().view(n, r, -1).clone()  # (n, r, d_emb)
    all_value = first.value.detach().view(n, r).clone()  # (n, r)
    if cfg.prune_step < cfg.steps:
        second = maximize(model, layer, site, objective(1), x, radius, cfg,
                          steps=cfg.steps - cfg.prune_step, step0=cfg.prune_step)
        better = second.value > value
        x = torch.where(better[:, None], second.x, x)
        value = torch.where(better, second.value, value)
        curve = torch.cat([curve, second.curve[1:]])  # its first evaluation repeats x
        idx = torch.arange(n, device=best.device)
        all_x[idx, best] = x.detach()
        all_value[idx, best] = value.detach()
    return Trace(x=x.detach(), value=value.detach(), curve=curve, restarts_x=all_x, restarts_value=all_value)
