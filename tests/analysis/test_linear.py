"""The probes' solver and metrics against scikit-learn: the same elastic-net optimum, the same AP and AUROC (ties)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from neurotext.analysis.linear import auroc, average_precision, fit_logistic

sk_metrics = pytest.importorskip("sklearn.metrics")
sk_linear = pytest.importorskip("sklearn.linear_model")


def test_average_precision_and_auroc_match_scikit_learn_with_ties_and_left_out_entries():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(size=(3, 150)), rng.integers(0, 4, size=(3, 150)).astype(float)])
    labels = rng.random((6, 150)) < 0.3
    valid = rng.random((6, 150)) < 0.8
    ap, au = average_precision(scores, labels, valid), auroc(scores, labels, valid)
    for r in range(6):
        s, y = scores[r][valid[r]], labels[r][valid[r]]
        assert ap[r] == pytest.approx(sk_metrics.average_precision_score(y, s), abs=1e-12)
        assert au[r] == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(average_precision([[1.0, 2.0]], [[False, False]]))[0]


def _problem(seed: int, n: int = 400, p: int = 30):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    x[:, :4] += 0.6 * x[:, 4:8]  # correlated units
    y = (x[:, :3] @ np.array([2.0, -1.0, 1.0]) + rng.normal(size=n) > 1.5).astype(float)
    a = np.where(y > 0, 0.5 / y.sum(), 0.5 / (n - y.sum()))  # balanced class weights, summing to 1
    return x, y, a


@pytest.mark.parametrize("alpha,l1_ratio", [(1e-2, 0.5), (3e-2, 1.0), (1e-2, 0.0)])
def test_fit_reaches_scikit_learns_elastic_net_optimum(alpha, l1_ratio):
    x, y, a = _problem(1)
    n, p = x.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sk_linear.LogisticRegression(C=1 / (alpha * n), l1_ratio=l1_ratio, solver="saga", class_weight="balanced",
                                          max_iter=50000, tol=1e-9).fit(x, y)
    t = lambda v: torch.tensor(v, dtype=torch.float32)[None, None]  # noqa: E731
    fit = fit_logistic(t(x)[0], t(y), t(a), torch.ones(1, 1, p), alpha, l1_ratio, 2000, 1e-7)
    w = fit.w[0, 0].numpy()
    assert np.abs(w - sk.coef_[0]).max() < 2e-3
    assert float(fit.b[0, 0]) == pytest.approx(float(sk.intercept_[0]), abs=2e-3)
    if l1_ratio > 0:
        assert set(np.flatnonzero(np.abs(w) > 1e-3)) == set(np.flatnonzero(np.abs(sk.coef_[0]) > 1e-3))


def test_masks_batches_and_warm_starts():
    """Probes of a batch are independent; weights outside a probe's units stay zero; a warm start reaches the
    same optimum."""
    (x1, y1, a1), (x2, y2, a2) = _problem(2), _problem(3)
    x = torch.tensor(np.stack([x1, x2]), dtype=torch.float32)
    y = torch.tensor(np.stack([np.stack([y1, y1]), np.stack([y2, y2])]), dtype=torch.float32)  # (2, 2, n)
    a = torch.tensor(np.stack([np.stack([a1, a1]), np.stack([a2, a2])]), dtype=torch.float32)
    mask = torch.ones(2, 2, x.shape[2])
    mask[:, 1, 10:] = 0  # the second probe of each row set may use the first 10 units only
    both = fit_logistic(x, y, a, mask, 1e-2, 0.5, 2000, 1e-7)
    assert (both.w[:, 1, 10:] == 0).all()
    alone = fit_logistic(x[1:], y[1:, :1], a[1:, :1], mask[1:, :1], 1e-2, 0.5, 2000, 1e-7)
    assert torch.allclose(both.w[1, 0], alone.w[0, 0], atol=1e-3)
    warm = fit_logistic(x, y, a, mask, 1e-2, 0.5, 2000, 1e-7, w0=both.w)
    assert torch.allclose(warm.w, both.w, atol=1e-3)
