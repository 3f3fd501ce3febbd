"""Objectives: small composable callables mapping a batch's site activations to one score per row.

An objective receives :class:`neurotext.model.adapters.SiteActs` (the activations of one site at x's
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


def direction(vectors: torch.Tensor, reported: bool = False) -> Objective:
    """Row i maximizes the projection of the whole site onto ``vectors[i]``: (B, units). The site's objective
    quantity (pre-activations for ``ffn``), or with ``reported`` its reported values (post-activations)."""
    if reported:
        return Objective(lambda acts: (acts.reported_all() * vectors).sum(dim=1), "direction (reported values)")
    return Objective(lambda acts: (acts.all() * vectors).sum(dim=1), "direction")


def pattern_masked(mask: torch.Tensor, target: torch.Tensor) -> Objective:
    """:func:`pattern` for rows whose unit sets differ in size: row i uses the units where ``mask[i]``
    is set. Shapes: ``mask`` (B, U) bool, ``target`` (B, U) (only its masked entries are read).

    Equal to ``pattern(idx, target[idx])`` row by row, including the single-unit fallback, so one
    batch can hold every k of a Q2 sweep. It reads the whole site (``acts.all()``, one (B, d) x (d, U)
    product) instead of gathering a (B, k, d) weight block, which for large k is the cheaper path.
    """
    m = mask.to(target.dtype)  # (B, U)
    k = m.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
    single = k[:, 0] == 1  # (B,) rows that fall back to the raw value
    sign = torch.sign((target * m).sum(dim=1))  # (B,) the single unit's target sign
    t = (target - (target * m).sum(dim=1, keepdim=True) / k) * m  # (B, U) centred on the set
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def fn(acts):
        a = acts.all()  # (B, U)
        raw = (a * m).sum(dim=1)  # (B,) the unit's value where k == 1
        c = (a - raw.unsqueeze(1) / k) * m  # (B, U) centred on the set
        cos = (c * t).sum(dim=1) / c.norm(dim=1).clamp_min(1e-12)
        return torch.where(single, raw * sign, cos)

    return Objective(fn, f"pattern of masked units [{len(m)} rows]")


def mean_masked(mask: torch.Tensor) -> Objective:
    """:func:`mean_of` for rows whose unit sets differ in size: row i maximizes the mean of the units
    where ``mask[i]`` (B, U) is set."""
    m = mask.float()  # (B, U)
    k = m.sum(dim=1).clamp_min(1)  # (B,)
    return Objective(lambda acts: (acts.all() * m).sum(dim=1) / k, f"mean of masked units [{len(m)} rows]")
