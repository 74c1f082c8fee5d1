r"""Across-image statistics of ``pfode largemodel explain`` records, each with a 95% bootstrap interval.

What each number measures (docs/theory.md §5.3), per resolution:

* **decomposition** ``log e = log A + log D`` (error = amplification x discrepancy): the spread
  (standard deviation across images) of ``log e``, ``log D`` and ``log A``, the Pearson correlation of
  ``log D`` and of ``log A`` with ``log e``, and the share ``cov(log D, log e) / var(log e)`` of the
  error's variance that goes with the discrepancy. The two shares summing to 1 is an identity (it
  holds for any records), listed under ``identities``, not a finding;
* **linearization at the real discrepancy**: ratio ``||J_G(z*)(z~ - z*)|| / ||G_N(z~) - y||``
  (median and 10-90% range) and the angle between the two vectors;
* **instability predicts error**: Spearman(``mu_bar``, the plain reconstruction error) at the run's
  own settings (``spearman_mu_bar_error``); Spearman(``mu_bar``, the error at a fixed ``||delta||``) is
  ``mu_bar``'s test-retest reliability (the same estimator twice), listed under ``identities``;
* **inverters**: median error ``||G_N(z) - y||`` and distance ``||z - z*||`` per NFE, the floor of the
  continuous inverse ``||G_N(F(y)) - y||`` and ``||F(y) - z*||``, and the explicit inverters against the
  exact inversion at the NFE it spends (``at_exact_nfe``);
* ``identities``: consistency checks that hold by construction for any differentiable ``G_N``
  (``{name, value, note}``): shares sum to 1, the decomposition identity's gap, the
  differentiability slope, ``mu_bar``'s reliability.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from simulate.stats import pearson_vectorized

from largemodel.diagnose.explain import INVERTERS

__all__ = ["summarize", "summary_lines"]


def _share_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """``cov(x, y) / var(y)`` along ``axis``: the share of ``var(y)`` carried by ``x`` when ``y = x + w``."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=axis) / (yc * yc).sum(axis=axis)


def _median_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def _sd_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.std(x, axis=axis, ddof=1)


def _with_ci(x: np.ndarray, y: np.ndarray, stat: Callable[..., np.ndarray], n_boot: int, seed: int) -> dict[str, Any]:
    from simulate.stats import bootstrap_ci

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return {"value": float("nan"), "ci": (float("nan"), float("nan")), "n": int(x.size)}
    ci, method = bootstrap_ci(x, y, stat, n_boot=n_boot, seed=seed, confidence=0.95, method="percentile")
    return {"value": float(stat(x, y)), "ci": ci, "n": int(x.size), "ci_method": method}


def _col(records: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([r.get(key) if r.get(key) is not None else np.nan for r in records], dtype=float)


def _log(records: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    v = _col(records, key)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)


def summarize(records: Sequence[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per resolution the statistics of the module docstring (keys below), plus medians and ``P_inst``."""
    from simulate.stats import correlate

    out: dict[str, Any] = {"n_records": len(records), "by_resolution": {}}
    for res in sorted({r["resolution"] for r in records}):
        rows = [r for r in records if r["resolution"] == res]
        s: dict[str, Any] = {"n_images": len(rows), "n": rows[0]["n"]}
        le, la, ld = (_log(rows, k) for k in ("error_latent", "amplification", "discrepancy"))
        s["sd_log_error"] = _with_ci(le, le, _sd_stat, n_boot, seed)
        s["sd_log_discrepancy"] = _with_ci(ld, ld, _sd_stat, n_boot, seed)
        s["sd_log_amplification"] = _with_ci(la, la, _sd_stat, n_boot, seed)
        s["corr_log_discrepancy_error"] = _with_ci(ld, le, pearson_vectorized, n_boot, seed)
        s["corr_log_amplification_error"] = _with_ci(la, le, pearson_vectorized, n_boot, seed)
        s["share_amplification"] = _with_ci(la, le, _share_stat, n_boot, seed)
        s["share_discrepancy"] = _with_ci(ld, le, _share_stat, n_boot, seed)
        for key, name in (("linear_ratio", "linear_ratio_median"), ("linear_angle_deg", "linear_angle_median"),
                          ("linear_remainder", "linear_remainder_median"),
                          ("causal_slope_random", "causal_slope_median"), ("causal_slope_top", "causal_slope_top_median"),
                          ("amp_over_mu", "amp_over_mu_median"), ("lambda_dir_over_mu", "lambda_dir_over_mu_median"),
                          ("vae_share_pixel", "vae_share_pixel_median")):
            v = _col(rows, key)
            s[name] = _with_ci(v, v, _median_stat, n_boot, seed)
        ratio = _col(rows, "linear_ratio")
        if np.isfinite(ratio).any():
            s["linear_ratio_range"] = np.nanpercentile(ratio, [10, 90]).tolist()
        s["exact_tol"] = rows[0].get("exact_tol")
        s["exact_converged_fraction"] = float(np.mean([bool(r.get("exact_converged")) for r in rows]))
        s["identity_gap_max_relative"] = float(np.nanmax(_col(rows, "identity_gap") / _col(rows, "error_latent")))
        lmu = _log(rows, "mu_bar")
        if len(rows) >= 3:
            s["spearman_mu_bar_error"] = correlate(lmu, le, n_boot=n_boot, seed=seed)
            if np.isfinite(_col(rows, "error_at_fixed_delta")).any():
                s["mu_bar_reliability"] = correlate(lmu, _log(rows, "error_at_fixed_delta"), n_boot=n_boot, seed=seed)
        for key in ("mu_bar", "error_latent", "discrepancy", "amplification", "log_Lambda", "spectral_norm",
                    "mse_pixel", "vae_mse_pixel", "floor_error", "floor_distance", "floor_nfe"):
            v = _col(rows, key)
            if np.isfinite(v).any():
                s.setdefault("medians", {})[key] = float(np.nanmedian(v))
        lam = _col(rows, "log_Lambda")
        if np.isfinite(lam).any():
            s["P_inst"] = float(np.mean(lam[np.isfinite(lam)] > 0.0))
        s["inverters"] = _inverter_medians(rows)
        s["at_exact_nfe"] = _at_exact_nfe(rows, n_boot, seed)
        s["identities"] = identities(s)
        out["by_resolution"][str(res)] = s
    return out


def identities(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The consistency checks of one resolution's summary ``s`` as ``{name, value, note}`` (true by
    construction; the report lists them apart from findings)."""
    out = [{"name": "explain: shares of var(log error) sum to 1",
            "value": s["share_amplification"]["value"] + s["share_discrepancy"]["value"],
            "note": "cov(log A, log e)/var(log e) + cov(log D, log e)/var(log e) = 1 because log e = log A + log D"},
           {"name": "explain: error = amplification x discrepancy", "value": s["identity_gap_max_relative"],
            "note": "largest |e - A D| / e; at most the exact inverse's residual ||G_N(z*) - y|| (triangle inequality)"},
           {"name": "explain: G_N is differentiable", "value": s["causal_slope_median"]["value"],
            "note": "median log-log slope of ||G_N(z* + delta) - y|| against ||delta|| below the real discrepancy: "
                    "1 for any differentiable map"}]
    if "mu_bar_reliability" in s:
        out.append({"name": "explain: mu_bar's test-retest reliability",
                    "value": s["mu_bar_reliability"]["spearman_rho"],
                    "note": "Spearman(mu_bar, error at a fixed ||delta|| from z*): the same estimator twice, "
                            "not a prediction of the reconstruction error"})
    return out


def _at_exact_nfe(rows: Sequence[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """Per explicit inverter at the exact inversion's NFE: median ``log10(e_inverter / e_exact)`` (interval)."""
    out: dict[str, Any] = {}
    per = [r["inverters"] for r in rows if "exact" in r.get("inverters", {})]
    for name in INVERTERS[:3]:
        key = name + "@exact_nfe"
        if not per or key not in per[0]:
            continue
        v = np.log10(np.array([p[key]["error"][0] / max(p["exact"]["error"][0], 1e-300) for p in per]))
        out[name] = {"nfe": per[0][key]["nfe"][0], "exact_nfe": per[0]["exact"]["nfe"][0],
                     "log10_error_over_exact": _with_ci(v, v, _median_stat, n_boot, seed)}
    return out


def _inverter_medians(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    names = list(INVERTERS) + [n + "@exact_nfe" for n in INVERTERS[:3]] + ["exact"]
    for name in names:
        per = [r["inverters"][name] for r in rows if name in r.get("inverters", {})]
        if not per:
            continue
        curves[name] = {"nfe": np.median(np.array([p["nfe"] for p in per], dtype=float), axis=0).tolist()}
        for key in ("error", "distance"):
            if all(key in p for p in per):
                curves[name]["median_" + key] = np.median(np.array([p[key] for p in per], dtype=float), axis=0).tolist()
    return curves


def _fmt(d: dict[str, Any], digits: int = 2) -> str:
    lo, hi = d["ci"]
    return f"{d['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few human lines per resolution (printed by the CLI)."""
    lines = []
    for res, s in summary["by_resolution"].items():
        lines.append(
            f"{res}px (n = {s['n']}, {s['n_images']} images): sd of log error {_fmt(s['sd_log_error'])}, "
            f"of log discrepancy {_fmt(s['sd_log_discrepancy'])}, of log amplification {_fmt(s['sd_log_amplification'])}; "
            f"corr(log error, log discrepancy) {_fmt(s['corr_log_discrepancy_error'])}, "
            f"corr(log error, log amplification) {_fmt(s['corr_log_amplification_error'])}")
        lines.append(f"  linearization at the real discrepancy: median ||J (z~ - z*)|| / ||G_N(z~) - y|| "
                     f"{_fmt(s['linear_ratio_median'])}, median angle {_fmt(s['linear_angle_median'], 1)} degrees")
        if s["exact_converged_fraction"] < 1.0:
            lines.append(f"  warning: the exact inversion did not converge for {100 * (1 - s['exact_converged_fraction']):.0f}% "
                         "of the images (exact_converged = false in explain.csv; raise --max-iter or --steps)")
        if "spearman_mu_bar_error" in s:
            c = s["spearman_mu_bar_error"]
            lines.append(f"  Spearman(mu_bar, reconstruction error): {c['spearman_rho']:.2f} "
                         f"[{c['spearman_ci'][0]:.2f}, {c['spearman_ci'][1]:.2f}]")
        med = s.get("medians", {})
        if "floor_error" in med:
            lines.append(f"  G_N's discretization floor ||G_N(F(y)) - y||: median {med['floor_error']:.3g}; "
                         f"exact inversion: median error {s['inverters']['exact']['median_error'][0]:.3g} "
                         f"at {s['inverters']['exact']['nfe'][0]:.0f} NFE")
    return lines
