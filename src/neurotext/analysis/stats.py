"""Small summary statistics shared by the analyses (Q1, Q2): quartiles that skip undefined values."""

from __future__ import annotations

import math

import numpy as np


def finite(values) -> np.ndarray:
    """The values that are defined: None and NaN dropped (float64 array)."""
    out = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return np.asarray(out, dtype=np.float64)


def quartiles(values) -> dict:
    """Median and quartiles of the defined values: {"median", "q1", "q3", "n"}; None where n == 0.

    ``n`` counts the defined values (retention, for instance, is undefined where the activation is not
    positive), so a reader sees how many neurons a median stands on.
    """
    v = finite(values)
    if v.size == 0:
        return {"median": None, "q1": None, "q3": None, "n": 0}
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": int(v.size)}


def share(flags) -> float | None:
    """Share of true values (None for an empty list)."""
    flags = list(flags)
    return sum(bool(f) for f in flags) / len(flags) if flags else None
