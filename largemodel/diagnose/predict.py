r"""How well does a score predict which images reconstruct badly? (issue 15)

For ``m`` images with reconstruction errors ``e_j`` (latent MSE of ``G(F~(x_j))``) the positive
class is the worst decile, ``y_j = 1`` iff ``e_j`` is among the ``ceil(m / 10)`` largest. A score
``r_j`` (larger = riskier) is judged by

- AUROC ``= P(r_+ > r_-) + P(r_+ = r_-) / 2`` (the Mann-Whitney statistic, via average ranks);
- average precision ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds (as
  scikit-learn defines it);
- Spearman's rho of ``r`` with ``e`` (``largemodel.study.stats.correlate``),

each with a paired bootstrap 95% interval over images (``largemodel.study.stats.bootstrap_ci``: BCa,
percentile fallback). A combination of the one-pass scores is fitted with cross-validation
(out-of-fold predictions only, so its AUROC is honest): logistic regression on the decile label
and ridge regression on ``log e``, both on standardised features (``log`` of the positive ones).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from theory.figures import save_png

from largemodel.study.stats import bootstrap_ci, correlate

__all__ = [
    "worst_fraction_labels",
    "auroc_vectorized",
    "average_precision_vectorized",
    "classification_metrics",
    "cross_validated_combination",
    "evaluate_scores",
    "calibration_figure",
]


def worst_fraction_labels(errors: Sequence[float] | np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """``y_j = 1`` for the ``ceil(fraction m)`` largest errors (ties broken by position), else 0."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all():
        raise ValueError("errors must be a 1-D finite array of at least 2 values")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--fraction must be in (0, 1), got {fraction}")
    k = max(1, math.ceil(fraction * e.size))
    labels = np.zeros(e.size, dtype=np.float64)
    labels[np.argsort(-e, kind="stable")[:k]] = 1.0
    return labels


def auroc_vectorized(labels: np.ndarray, scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC along ``axis`` by the Mann-Whitney formula ``(sum of positive ranks - m1(m1+1)/2) / (m1 m0)``
    with average ranks for ties (equal to ``sklearn.metrics.roc_auc_score``); NaN for one class."""
    pos = np.moveaxis(np.asarray(labels), axis, -1) > 0.5
    ranks = sps.rankdata(np.moveaxis(np.asarray(scores, dtype=np.float64), axis, -1), axis=-1)
    m1 = pos.sum(-1).astype(np.float64)
    m0 = pos.shape[-1] - m1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * pos).sum(-1) - m1 * (m1 + 1) / 2) / (m1 * m0)


def average_precision_vectorized(labels: np.ndarray, scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Average precision along ``axis``, ``sum_k (R_k - R_{k-1}) P_k`` over distinct score thresholds
    (equal to ``sklearn.metrics.average_precision_score``): each positive contributes the precision at the
    end of its tie group, divided by the number of positives; NaN without positives."""
    y = np.moveaxis(np.asarray(labels), axis, -1) > 0.5
    s = np.moveaxis(np.asarray(scores, dtype=np.float64), axis, -1)
    order = np.argsort(-s, axis=-1, kind="stable")
    s_sorted = np.take_along_axis(s, order, -1)
    y_sorted = np.take_along_axis(y, order, -1).astype(np.float64)
    tp = np.cumsum(y_sorted, axis=-1)
    m = s.shape[-1]
    idx = np.broadcast_to(np.arange(m), s.shape)
    last = np.concatenate([s_sorted[..., :-1] != s_sorted[..., 1:], np.ones(s.shape[:-1] + (1,), bool)], axis=-1)
    ends = np.flip(np.minimum.accumulate(np.flip(np.where(last, idx, m), -1), axis=-1), -1)
    precision = np.take_along_axis(tp, ends, -1) / (ends + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (y_sorted * precision).sum(-1) / y_sorted.sum(-1)


def classification_metrics(labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                           confidence: float = 0.95) -> dict[str, Any]:
    """AUROC and AP of ``scores`` for ``labels`` with paired bootstrap intervals over images."""
    y = np.asarray(labels, dtype=np.float64)
    r = np.asarray(scores, dtype=np.float64)
    if y.shape != r.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-D of one length")
    if not np.isfinite(r).all():
        raise ValueError("scores must be finite")
    if y.min() == y.max():
        raise ValueError("labels must contain both classes")
    out: dict[str, Any] = {"n": int(y.size), "positives": int(y.sum()), "confidence": confidence, "n_boot": n_boot}
    for name, fn in (("auroc", auroc_vectorized), ("ap", average_precision_vectorized)):
        ci, method = bootstrap_ci(y, r, fn, n_boot=n_boot, seed=seed, confidence=confidence)
        out[name] = float(fn(y, r))
        out[f"{name}_ci"] = ci
        out[f"{name}_ci_method"] = method
    out["ap_chance"] = float(y.mean())
    return out


def _feature_matrix(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    cols = []
    for name in names:
        col = np.array([float(r[name]) for r in records], dtype=np.float64)
        cols.append(np.log(col) if (col > 0).all() else col)
    return np.stack(cols, axis=1)


def cross_validated_combination(features: np.ndarray, labels: np.ndarray, log_errors: np.ndarray, *,
                                folds: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Out-of-fold predictions of two combinations of the feature columns.

    ``logistic``: ``P(y = 1 | features)`` from an L2 logistic regression (stratified folds);
    ``ridge``: predicted ``log e`` from ridge regression. Each image's prediction comes from a
    model fitted without it. Features are standardised inside each fold.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels).astype(int)
    k = int(min(folds, y.sum(), (1 - y).sum()))
    if k < 2:
        raise ValueError("need at least 2 images in each class for a cross-validated combination")
    logit = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    strat = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    prob = cross_val_predict(logit, features, y, cv=strat, method="predict_proba")[:, 1]
    ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    pred = cross_val_predict(ridge, features, log_errors, cv=KFold(n_splits=k, shuffle=True, random_state=seed))
    return {"logistic": prob, "ridge": pred}


def evaluate_scores(records: Sequence[Mapping[str, Any]], scores: Sequence[str], *, combine: Sequence[str] = (),
                    error_key: str = "mse_latent", fraction: float = 0.1, n_boot: int = 2000, seed: int = 0,
                    folds: int = 5) -> dict[str, Any]:
    """Each score alone and the cross-validated combinations of ``combine`` against the worst ``fraction``.

    Returns:
        ``{"n", "positives", "fraction", "error_key", "scores": {name: {auroc, auroc_ci, ap, ap_ci,
        spearman, spearman_ci, ...}}, "values": {name: per-image values (out-of-fold for the
        combinations)}, "labels", "errors", "keys", "combined_from"}``.
    """
    recs = [r for r in records if all(r.get(k) is not None for k in (error_key, *scores, *combine))]
    if len(recs) < 10:
        raise ValueError(f"need at least 10 records with {error_key} and every score, got {len(recs)}")
    errors = np.array([float(r[error_key]) for r in recs], dtype=np.float64)
    labels = worst_fraction_labels(errors, fraction)
    table: dict[str, Any] = {}
    columns = {name: np.array([float(r[name]) for r in recs]) for name in scores}
    if combine:
        comb = cross_validated_combination(_feature_matrix(recs, combine), labels, np.log(errors), folds=folds, seed=seed)
        for name, values in comb.items():
            columns[f"combined_{name}"] = values
    for name, values in columns.items():
        row = classification_metrics(labels, values, n_boot=n_boot, seed=seed)
        corr = correlate(values, np.log(errors), n_boot=n_boot, seed=seed)
        row.update(spearman=corr["spearman_rho"], spearman_ci=corr["spearman_ci"])
        table[name] = row
    return {"n": len(recs), "positives": int(labels.sum()), "fraction": fraction, "error_key": error_key,
            "scores": table, "values": {k: v.tolist() for k, v in columns.items()}, "labels": labels.tolist(),
            "errors": errors.tolist(), "keys": [r.get("key") for r in recs], "combined_from": list(combine)}


def calibration_figure(result: Mapping[str, Any], out_png: str | Path, *, bins: int = 5, title: str = "") -> Path:
    """ROC curves of every score and the reliability diagram of the logistic combination's
    out-of-fold probabilities (``sklearn.calibration.calibration_curve``, quantile bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    labels = np.asarray(result["labels"])
    fig, (ax_roc, ax_cal) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, row in result["scores"].items():
        fpr, tpr, _ = roc_curve(labels, np.asarray(result["values"][name]))
        ax_roc.plot(fpr, tpr, lw=1.2, label=f"{name} ({row['auroc']:.2f})")
    ax_roc.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate",
               title=f"worst {100 * result['fraction']:.0f}% by {result['error_key']} (AUROC)")
    ax_roc.legend(fontsize=7, loc="lower right")
    if "combined_logistic" in result["values"]:
        prob = np.asarray(result["values"]["combined_logistic"])
        frac, mean_pred = calibration_curve(labels, prob, n_bins=bins, strategy="quantile")
        ax_cal.plot(mean_pred, frac, "o-", label="logistic combination (out of fold)")
        # axes fitted to the points (the probabilities of a worst-decile label stay far below 1)
        top = min(1.0, 1.15 * float(max(np.max(mean_pred), np.max(frac), 1e-3)))
        ax_cal.plot([0, top], [0, top], color="gray", lw=0.8, ls="--", label="perfect calibration")
        ax_cal.set(xlim=(-0.03 * top, top), ylim=(-0.03 * top, top))
        ax_cal.legend(fontsize=8, loc="upper left")
    ax_cal.set(xlabel="predicted probability of the worst decile", ylabel="observed frequency",
               title="calibration")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, out_png, dpi=120)
