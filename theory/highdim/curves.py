r"""Theorem 4.3's bounds as curves over the dimension ``n`` (data, plots, regime map).

For a ``c_n`` schedule (default ``c_n = (1 + eps) n``, ``eps = 0.1``) the curves give, for
``n = 1 .. 10^7`` on a log grid: ``r*``, ``log S_n(l, r*)`` and its per-dimension rate next to
the large-``n`` rate, the p1 and p2 bounds (as logs) and the lower bound on ``P_inst``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from theory._validate import as_int_array, require_positive
from theory.figures import save_png
from theory.highdim.defaults import CURVE_DEFAULTS
from theory.output.files import make_dirs, write_text
from theory.highdim.thm43 import asymptotic_rbar_squared, asymptotic_verdict, c_schedule, instability_bounds, p1_bound_rate

__all__ = ["CURVE_DEFAULTS", "dimension_grid", "theory_curves", "p1_rate_map", "plot_theory_curves", "write_theory_curves"]



def dimension_grid(num: int = 200, n_max: float = 1e7) -> np.ndarray:
    """``num`` distinct integers from 1 to ``n_max``, log-spaced (duplicates at small n are dropped)."""
    num_val = int(as_int_array("num", num, minimum=2))
    n_top = float(as_int_array("n_max", n_max, minimum=2))
    grid = np.unique(np.round(np.logspace(0.0, np.log10(n_top), num_val)).astype(np.int64))
    if grid.size < num_val:  # refill the small-n end with the missing integers
        extra = np.setdiff1d(np.arange(1, num_val + 1), grid)[: num_val - grid.size]
        grid = np.unique(np.concatenate([grid, extra]))
    return grid


def theory_curves(
    ns: np.ndarray | None = None,
    *,
    num: int = 200,
    n_max: float = 1e7,
    m: int = 10,
    sigma: float = 0.05,
    side: float = 0.05,
    tau: float = 1.0,
    eps: float = 0.1,
    rho_max: float = 1.0,
    density_ratio: float = 1.0,
) -> dict[str, Any]:
    """Evaluate Theorem 4.3's bounds along ``n`` for the schedule ``c_n = (1 + eps) n``.

    Returns:
        JSON-ready dict: ``params``; per-``n`` lists ``n``, ``c``, ``r_star``, ``rbar``
        (``r*/sqrt(n)``), ``log_steiner_volume``, ``steiner_rate_finite`` (``log S_n / n``),
        ``log_p1_bound``, ``log_p2_bound``, ``p1_bound``, ``p2_bound``, ``p_inst_lower_bound``;
        ``asymptotic``: the limits (``rbar``, rates, verdict of :func:`asymptotic_verdict`).
    """
    grid = dimension_grid(num, n_max) if ns is None else as_int_array("ns", ns)
    eps_val = float(require_positive("eps", eps))
    c = c_schedule(grid, eps_val)
    b = instability_bounds(grid, m, sigma, side, tau, c, rho_max, density_ratio)
    gamma = 1.0 + eps_val
    rbar2 = float(asymptotic_rbar_squared(gamma, sigma, tau))
    verdict = asymptotic_verdict(gamma, sigma, side, tau) if side > 0 else None
    return {
        "params": {"m": m, "sigma": sigma, "side": side, "tau": tau, "eps": eps_val, "rho_max": rho_max,
                   "density_ratio": density_ratio, "schedule": "c_n = (1 + eps) n"},
        "n": grid.tolist(),
        "c": c.tolist(),
        "r_star": b["r_star"].tolist(),
        "rbar": (b["r_star"] / np.sqrt(grid)).tolist(),
        "log_steiner_volume": b["log_steiner_volume"].tolist(),
        "steiner_rate_finite": (b["log_steiner_volume"] / grid).tolist(),
        "log_p1_bound": _finite_or_none(b["log_p1_bound"]),
        "log_p2_bound": _finite_or_none(b["log_p2_bound"]),
        "p1_bound": b["p1_bound"].tolist(),
        "p2_bound": b["p2_bound"].tolist(),
        "p_inst_lower_bound": b["p_inst_lower_bound"].tolist(),
        "asymptotic": {
            "gamma": gamma,
            "rbar": float(np.sqrt(max(rbar2, 0.0))),
            **(asdict(verdict) if verdict is not None else {}),
        },
    }


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """JSON has no -inf: log-probabilities of exactly 0 are written as null."""
    return [float(v) if np.isfinite(v) else None for v in values]


def p1_rate_map(
    sigmas: np.ndarray | None = None,
    sides: np.ndarray | None = None,
    *,
    tau: float = 1.0,
    eps: float = 0.1,
) -> dict[str, Any]:
    """Exponential rate of the p1 bound over a (sigma, side) grid: where Theorem 4.3's p1 -> 0 holds.

    Negative rate: the p1 bound vanishes exponentially in ``n``; positive: the bound is
    eventually trivial (1), so Theorem 4.3 gives no instability guarantee there.
    """
    sig = np.logspace(-3, 0, 31) if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    sid = np.logspace(-3, 0, 31) if sides is None else np.asarray(sides, dtype=np.float64)
    rate = p1_bound_rate(1.0 + eps, sig[:, None], sid[None, :], tau)
    return {
        "sigma": sig.tolist(),
        "side": sid.tolist(),
        "tau": tau,
        "eps": eps,
        "rate": [[float(v) if np.isfinite(v) else None for v in row] for row in rate],
        "fraction_p1_to_zero": float(np.mean(rate < 0)),
    }


def plot_theory_curves(curves: dict[str, Any], rate_map: dict[str, Any] | None, out_dir: Path,
                       measured: dict[str, Any] | None = None) -> list[Path]:
    """Write the PNG figures of the curves (and the rate map) into ``out_dir``; return their paths.

    The ``P_inst`` lower bound ``1 - p1 - p2`` (docs/theory.md §8.5) needs the hypothesis ``p_r <= K p_g``;
    it is drawn with ``K = density_ratio`` and labelled as conditional on it. ``measured`` (optional) puts
    a measured ``P_inst`` on the same axes with its 95% interval, next to the same conditional bound at
    the measured ``p_g``'s parameters: ``{"label", "params": {m, sigma, side}, "n", "estimate", "lower",
    "upper", "bound_K1"}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    make_dirs(out_dir)
    n = np.asarray(curves["n"], dtype=float)
    p = curves["params"]
    title = (f"m={p['m']}, sigma={p['sigma']}, l={p['side']}, tau={p['tau']}, c_n=(1+{p['eps']})n, "
             f"rho_max={p['rho_max']}, K={p['density_ratio']}")
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    ax = axes[0]
    ax.semilogx(n, curves["p1_bound"], label="p1 bound")
    ax.semilogx(n, curves["p2_bound"], label="p2 bound")
    ax.semilogx(n, curves["p_inst_lower_bound"], ls="--", lw=2,
                label=f"P_inst lower bound 1 - p1 - p2, IF p_r <= K p_g with K = {p['density_ratio']:g} (hypothesis)")
    if measured is not None:
        mp = measured["params"]
        mn = np.asarray(measured["n"], dtype=float)
        est = np.asarray(measured["estimate"], dtype=float)
        err = np.vstack([est - np.asarray(measured["lower"]), np.asarray(measured["upper"]) - est])
        ax.semilogx(mn, measured["bound_K1"], ls=":", lw=2, color="tab:purple",
                    label=f"same bound IF K = 1, at m={mp['m']}, sigma={mp['sigma']:g}, l={mp['side']:g}")
        ax.errorbar(mn, est, yerr=err, fmt="o", color="k", capsize=3,
                    label=f"measured P_inst there ({measured['label']}), 95% Clopper-Pearson")
    ax.set_xlabel("dimension n")
    ax.set_ylabel("probability")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=7)
    ax.set_title("Theorem 4.3 bounds (the P_inst curves assume p_r <= K p_g)", fontsize=9)
    ax = axes[1]
    log10 = np.log10(np.e)
    for key, label in (("log_p1_bound", "p1 bound"), ("log_p2_bound", "p2 bound")):
        vals = np.array([np.nan if v is None else -v * log10 for v in curves[key]])
        ax.loglog(n, np.where(vals > 0, vals, np.nan), label=label)
    ax.set_xlabel("dimension n")
    ax.set_ylabel("-log10(bound)")
    ax.set_title("Decay of the bounds, in log space (far below double precision)", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=7)
    fig.suptitle(title, fontsize=9)
    paths.append(save_png(fig, out_dir / "theory_bounds_vs_n.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.semilogx(n, curves["steiner_rate_finite"], label="(1/n) log S_n(l, r*)")
    asym = curves["asymptotic"]
    if "p1_rate" in asym:
        ax.axhline(asym["p1_rate"], color="k", ls="--", label=f"large-n rate {asym['p1_rate']:.4f}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("dimension n")
    ax.set_ylabel("log-volume per dimension")
    ax.set_title(f"Steiner rate of the cube's parallel body at r*\n(sigma = {p['sigma']}, side l = {p['side']}, "
                 f"tau = {p['tau']}, c_n = (1 + {p['eps']}) n)", fontsize=10)
    ax.legend()
    paths.append(save_png(fig, out_dir / "theory_steiner_rate.png"))

    if rate_map is not None:
        rate = np.array([[np.nan if v is None else v for v in row] for row in rate_map["rate"]])
        fig, ax = plt.subplots(figsize=(6.5, 5))
        lim = np.nanmax(np.abs(rate)) if np.any(np.isfinite(rate)) else 1.0
        mesh = ax.pcolormesh(rate_map["side"], rate_map["sigma"], rate, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
        if np.nanmin(rate) < 0 < np.nanmax(rate):
            ax.contour(rate_map["side"], rate_map["sigma"], rate, levels=[0.0], colors="k")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("support side l")
        ax.set_ylabel("sigma")
        ax.set_title(f"p1-bound rate (blue: p1 -> 0), tau={rate_map['tau']}, c_n=(1+{rate_map['eps']})n", fontsize=9)
        fig.colorbar(mesh, ax=ax, label="lim (1/n) log(m S_n(l, r*))")
        paths.append(save_png(fig, out_dir / "theory_p1_rate_map.png"))
    return paths


def write_theory_curves(out_dir: str | Path, measured: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    """Compute the curves and the rate map, write ``theory_curves.json`` and the PNGs to ``out_dir``
    (``measured``: see :func:`plot_theory_curves`; kept in the JSON as ``measured_p_inst``)."""
    out = Path(out_dir)
    curves = theory_curves(**params)
    rate_map = p1_rate_map(tau=curves["params"]["tau"], eps=curves["params"]["eps"])
    figures = plot_theory_curves(curves, rate_map, out, measured)
    data = {"curves": curves, "p1_rate_map": rate_map, "figures": [f.name for f in figures], "measured_p_inst": measured}
    write_text(out / "theory_curves.json", json.dumps(data, indent=1))
    return {"json": out / "theory_curves.json", "figures": figures, "data": data}
