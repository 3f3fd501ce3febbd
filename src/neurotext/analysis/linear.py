"""Linear probes: elastic-net logistic regression for many probes at once, and the ranking metrics of their scores.

:func:`fit_logistic` minimizes, for every probe b of a batch independently,

    sum_i a_bi * logloss(y_bi, x_bi . w_b + c_b) + alpha * ((1 - l1_ratio) / 2 * |w_b|^2 + l1_ratio * |w_b|_1)

with sample weights ``a`` that sum to 1 per probe (class weighting: each class half of the weight) and an
unpenalized intercept ``c``. It is scikit-learn's ``LogisticRegression(C, l1_ratio, class_weight="balanced")``
objective with ``C = 1 / (alpha * n)`` (n training rows), solved in torch by working sets (the units that
matter, grown until the optimality conditions hold everywhere) and accelerated proximal gradient on them (FISTA
with adaptive restarts, Beck and Teboulle 2009; O'Donoghue and Candes 2015), batched: B row sets at once, each
with F probes that share its rows (a word and its control task; the nested unit sets of a k-sweep). A unit mask
fixes the weights outside each probe's unit set at zero. Every product has the probes' weights as rows
(``(B, F, C) @ (B, C, n)``): on the CPU that form streams the data several times faster than a matrix times a
column vector.

:func:`average_precision` and :func:`auroc` score many probes' test scores at once, ties as scikit-learn
counts them (average precision: precision at each distinct threshold, weighted by the recall gained; AUROC:
ties count half).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

POWER_ITERATIONS = 12  # power-iteration steps for each probe's Lipschitz constant
LIPSCHITZ_SAFETY = 1.3  # the power iteration underestimates the largest eigenvalue: a margin
CHECK_EVERY = 10  # convergence of the inner solve is checked this often (steps)
KKT_TOL = 0.1  # done when no weight's gradient passes the L1 threshold by more than this share of it
MAX_OUTER = 12  # working-set rounds at most
WS_MIN = 32  # a probe's working set: at least this many units, else twice its nonzero weights


@dataclass
class Fit:
    """Fitted probes: weights (B, F, U), intercepts (B, F), the proximal-gradient steps and working-set rounds."""

    w: torch.Tensor
    b: torch.Tensor
    steps: int
    rounds: int


def _lipschitz(xt: torch.Tensor, a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of each probe's weighted Gram matrix over its units and the intercept: (B, F).

    xt (B, C, n) the units' values, a (B, F, n) row weights, mask (B, F, C) each probe's units."""
    v = mask.clone()  # (B, F, C)
    c = torch.ones(mask.shape[:2], dtype=xt.dtype, device=xt.device)  # (B, F): the intercept's coordinate
    lam = torch.ones_like(c)
    for _ in range(POWER_ITERATIONS):
        norm = (v.pow(2).sum(2) + c.pow(2)).sqrt().clamp_min(1e-30)
        v, c = v / norm.unsqueeze(2), c / norm
        z = a * (torch.bmm(v, xt) + c.unsqueeze(2))  # (B, F, n)
        v = torch.bmm(z, xt.transpose(1, 2)) * mask  # (B, F, C)
        c = z.sum(2)
        lam = (v.pow(2).sum(2) + c.pow(2)).sqrt()  # |G v| for the unit vector v
    return lam


def _fista(xt, y, a, mask, w, c, l1: float, l2: float, steps: int, tol: float) -> tuple:
    """Accelerated proximal gradient on a working set: xt (B, C, n), y and a (B, F, n), mask (B, F, C), from the
    start w (B, F, C), c (B, F). A row set whose probes have converged leaves the batch. Returns (w, c, steps)."""
    step = 1.0 / (0.25 * LIPSCHITZ_SAFETY * _lipschitz(xt, a, mask) + l2)  # (B, F)
    out_w, out_c = w.clone(), c.clone()
    live = torch.arange(xt.shape[0], device=xt.device)  # the row sets still iterating
    vw, vc, t = w.clone(), c.clone(), torch.ones_like(c)
    done = 0
    for done in range(1, steps + 1):
        z = torch.baddbmm(vc.unsqueeze(2), vw, xt)  # (b, F, n)
        g = a * (torch.sigmoid(z) - y)  # d loss / d z
        nw = vw - step.unsqueeze(2) * (torch.bmm(g, xt.transpose(1, 2)) + l2 * vw)
        nw = nw.sign() * (nw.abs() - l1 * step.unsqueeze(2)).clamp_min(0) * mask  # the L1 prox, masked
        nc = vc - step * g.sum(2)
        # adaptive restart: momentum that points against the step is dropped (per probe)
        restart = ((vw - nw) * (nw - w)).sum(2) + (vc - nc) * (nc - c) > 0  # (b, F)
        t = torch.where(restart, torch.ones_like(t), t)
        nt = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / nt
        moved = (nw - w).abs().flatten(1).amax(1) if done % CHECK_EVERY == 0 else None  # (b,)
        vw, vc = nw + beta.unsqueeze(2) * (nw - w), nc + beta * (nc - c)
        w, c, t = nw, nc, nt
        if moved is not None:
            conv = moved <= tol * w.abs().flatten(1).amax(1).clamp_min(1.0)  # (b,)
            if bool(conv.any()):
                out_w[live[conv]], out_c[live[conv]] = w[conv], c[conv]
                keep = ~conv
                if not bool(keep.any()):
                    return out_w, out_c, done
                live = live[keep]
                xt, y, a, mask, step = xt[keep], y[keep], a[keep], mask[keep], step[keep]
                w, c, t, vw, vc = w[keep], c[keep], t[keep], vw[keep], vc[keep]
    out_w[live], out_c[live] = w, c
    return out_w, out_c, done


def fit_logistic(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, mask: torch.Tensor, alpha: float,
                 l1_ratio: float, steps: int, tol: float, w0: torch.Tensor | None = None) -> Fit:
    """Elastic-net logistic regression for B row sets, F probes each, by working sets.

    Each round computes every unit's gradient, checks the optimality (KKT) conditions, and solves the problem
    restricted to a working set (per row set: the union over its probes of their nonzero weights and their
    largest violators, at least :data:`WS_MIN`, twice the nonzero count) by accelerated proximal gradient; it
    stops when no zero weight's gradient passes the L1 threshold by more than :data:`KKT_TOL` of it (working sets
    as skglm and celer solve the lasso, Massias et al. 2020). With ``l1_ratio = 0`` the working set is every unit.

    Args:
        x: (B, n, U) float32 design matrices (standardized units; padding rows have weight 0).
        y: (B, F, n) labels in {0, 1} of each probe (probes of a row set may label its rows differently: a word
            and its control task share rows).
        a: (B, F, n) sample weights, summing to 1 over n for each probe; 0 leaves a row out.
        mask: (B, F, U) the units each probe may use.
        alpha, l1_ratio: the elastic-net penalty (see the module docstring).
        steps: most proximal-gradient steps per round; tol: a round's solve stops when no weight moved by more
            than ``tol`` (relative to the largest weight, at least 1) over a step.
        w0: (B, F, U) a warm start (masked here), or None for zeros.

    Returns:
        :class:`Fit` with w (B, F, U), zero outside ``mask``, and b (B, F).
    """
    mask = mask.to(dtype=x.dtype)
    bsz, n, u = x.shape
    l2, l1 = alpha * (1 - l1_ratio), alpha * l1_ratio
    xt = x.transpose(1, 2).contiguous()  # (B, U, n): a unit's values are contiguous
    w = torch.zeros_like(mask) if w0 is None else w0.to(x.dtype) * mask
    c = torch.zeros(mask.shape[:2], dtype=x.dtype, device=x.device)
    rows = torch.arange(bsz, device=x.device).unsqueeze(1)
    total, rounds = 0, 0
    for rounds in range(1, MAX_OUTER + 1):
        if l1 > 0:
            z = torch.baddbmm(c.unsqueeze(2), w, xt)  # (B, F, n)
            grad = torch.bmm(a * (torch.sigmoid(z) - y), x) + l2 * w  # (B, F, U)
            nz = w != 0
            viol = torch.where(nz, torch.zeros_like(grad), (grad.abs() - l1).clamp_min(0)) * mask  # zero weights
            if rounds > 1 and float(viol.amax()) <= KKT_TOL * l1:  # that should stay zero: the solve is done
                break
            size = (2 * nz.sum(2)).clamp_min(WS_MIN)  # (B, F) working-set size of each probe
            score = torch.where(nz, torch.full_like(viol, float("inf")), viol)  # the support, then violators
            score = torch.where(mask > 0, score, torch.full_like(viol, -1.0))
            top = score.argsort(2, descending=True)  # (B, F, U)
            pick = (torch.arange(u, device=x.device).view(1, 1, -1) < size.unsqueeze(2)) & \
                (score.gather(2, top) > 0)
            chosen = (torch.zeros_like(mask).scatter_(2, top, pick.to(mask.dtype)) > 0).any(1)  # (B, U)
        else:
            chosen = (mask > 0).any(1)
        m = max(int(chosen.sum(1).max()), 1)
        cols = chosen.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :m]  # (B, m) chosen units first
        cmask = mask.gather(2, cols.unsqueeze(1).expand(-1, mask.shape[1], -1)) * \
            chosen.gather(1, cols).unsqueeze(1).to(mask.dtype)  # (B, F, m)
        ws = xt[rows, cols]  # (B, m, n)
        wi = w.gather(2, cols.unsqueeze(1).expand(-1, mask.shape[1], -1)) * cmask
        wi, c, done = _fista(ws, y, a, cmask, wi, c, l1, l2, steps, tol)
        total += done
        w = torch.zeros_like(w).scatter_(2, cols.unsqueeze(1).expand(-1, mask.shape[1], -1), wi)
        if l1 == 0:
            break
    return Fit(w=w, b=c, steps=total, rounds=rounds)


# --------------------------------------------------------------------------- ranking metrics
def _sorted_counts(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray):
    """Per row, sorted by score descending: cumulative positive and negative weight at each distinct threshold's
    last entry (``end``), and the same at the previous distinct threshold."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, 1)
    tp = np.cumsum(np.take_along_axis(pos, order, 1), 1)
    fp = np.cumsum(np.take_along_axis(neg, order, 1), 1)
    end = np.ones_like(s, dtype=bool)
    end[:, :-1] = s[:, :-1] != s[:, 1:]
    tp_end, fp_end = np.where(end, tp, 0.0), np.where(end, fp, 0.0)
    tp_prev = np.zeros_like(tp)
    fp_prev = np.zeros_like(fp)
    tp_prev[:, 1:] = np.maximum.accumulate(tp_end, 1)[:, :-1]  # counts are nondecreasing: the max is the last end
    fp_prev[:, 1:] = np.maximum.accumulate(fp_end, 1)[:, :-1]
    return end, tp, fp, tp_prev, fp_prev


def _weights(labels: np.ndarray, valid: np.ndarray | None):
    labels = np.asarray(labels, dtype=bool)
    valid = np.ones_like(labels) if valid is None else np.asarray(valid, dtype=bool)
    return (labels & valid).astype(np.float64), (~labels & valid).astype(np.float64)


def average_precision(scores, labels, valid=None) -> np.ndarray:
    """Average precision of each row's scores (R, n) for its labels (R, n); ``valid`` (R, n) leaves entries out.

    AP = sum over distinct thresholds of (recall gained) x (precision there), as scikit-learn's
    ``average_precision_score``; NaN for a row without positives."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = _weights(np.atleast_2d(labels), None if valid is None else np.atleast_2d(valid))
    scores = np.where((pos + neg) > 0, scores, -np.inf)
    end, tp, fp, tp_prev, _ = _sorted_counts(scores, pos, neg)
    total = pos.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / np.maximum(tp + fp, 1e-300)
        out = (np.where(end, (tp - tp_prev) * precision, 0.0).sum(1, keepdims=True) / total)[:, 0]
    return out


def auroc(scores, labels, valid=None) -> np.ndarray:
    """Area under the ROC curve of each row (R, n) (ties count half); NaN for a row without both classes."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = _weights(np.atleast_2d(labels), None if valid is None else np.atleast_2d(valid))
    scores = np.where((pos + neg) > 0, scores, -np.inf)
    end, tp, fp, tp_prev, fp_prev = _sorted_counts(scores, pos, neg)
    area = np.where(end, (fp - fp_prev) * (tp_prev + 0.5 * (tp - tp_prev)), 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return area / (pos.sum(1) * neg.sum(1))
