"""Objectives: small composable callables mapping a batch's site activations to one score per row.

An objective receives :class:`neurotext.model.SiteActs` (the activations of one site at x's
position, shape (B, units)) and returns a (B,) tensor to maximize. Every row carries its own
parameters (its unit, its unit set, its target pattern), so one batch can hold many neurons.
Objectives combine with ``+``, ``-`` and ``*`` and describe themselves, as in lucent.

For ``ffn`` sites the values are pre-activations: GELU is flat for negative inputs, so gradients of
the post-activation vanish for many random starts (Baeumel et al. 2023, DESIGN.md section 1).
"""

from __future__ import annotations

import torch


class Objective:
    """A named callable ``SiteActs -> (B,)``; supports ``+``, ``-``, ``*`` with objectives and numbers."""

    def __init__(self, fn, description: str):
        self.fn = fn
        self.description = description

    def __call__(self, acts) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    @staticmethod
    def _lift(other) -> Objective:
        if isinstance(other, Objective):
            return other
        return Objective(lambda acts: torch.as_tensor(other), repr(other))

    def __add__(self, other):
        other = self._lift(other)
        return Objective(lambda a: self(a) + other(a), f"{self.description} + {other.description}")

    __radd__ = __add__

    def __sub__(self, other):
        other = self._lift(other)
        return Objective(lambda a: self(a) - other(a), f"{self.description} - {other.description}")

    def __neg__(self):
        return Objective(lambda a: -self(a), f"-({self.description})")

    def __mul__(self, other):
        other = self._lift(other)
        return Objective(lambda a: self(a) * other(a), f"({self.description}) * ({other.description})")

    __rmul__ = __mul__


def unit(units: torch.Tensor) -> Objective:
    """Row i maximizes unit ``units[i]``: (B,) long."""
    idx = units.long().view(-1, 1)  # (B, 1)
    return Objective(lambda acts: acts.units(idx)[:, 0], f"unit[{len(idx)} rows]")


def mean_of(idx: torch.Tensor) -> Objective:
    """Row i maximizes the mean of units ``idx[i]``: (B, k) long."""
    idx = idx.long()
    return Objective(lambda acts: acts.units(idx).mean(dim=1), f"mean of {idx.shape[1]} units")


def pattern(idx: torch.Tensor, target: torch.Tensor) -> Objective:
    """Row i maximizes the cosine between its centred activations on units ``idx[i]`` and the centred
    ``target[i]`` (DESIGN.md section 4, the Q2 pattern objective). Shapes: (B, k) and (B, k).

    With k == 1 centring leaves nothing, so a single unit falls back to its raw value.
    """
    idx = idx.long()
    if idx.shape[1] == 1:
        return Objective(lambda acts: acts.units(idx)[:, 0] * torch.sign(target[:, 0]), "pattern of 1 unit")
    t = target - target.mean(dim=1, keepdim=True)  # (B, k)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def fn(acts):
        a = acts.units(idx)  # (B, k)
        a = a - a.mean(dim=1, keepdim=True)
        return (a * t).sum(dim=1) / a.norm(dim=1).clamp_min(1e-12)

    return Objective(fn, f"pattern of {idx.shape[1]} units")


def direction(vectors: torch.Tensor) -> Objective:
    """Row i maximizes the projection of the whole site onto ``vectors[i]``: (B, units)."""
    return Objective(lambda acts: (acts.all() * vectors).sum(dim=1), "direction")
