r"""One reconstruction pipeline of the Fig. 4(b) experiment (the unit of :mod:`.fig4`).

For data ``x``: inversion ``z~ = F~(x)``, regeneration ``x^ = G~(z~)`` (docs/theory.md §4.3), error
``e = ||x^ - x||``, the averaged instability coefficient ``mu_bar(z~)`` of the regeneration map
(§2.5), the correlation of ``e`` with ``mu_bar`` (:func:`simulate.stats.correlation_summary`, §9.6)
and the decomposition ``e = mu_G~(z_ref, z~ - z_ref) ||z~ - z_ref||`` (§5.3) against the noise
``z_ref`` the regeneration sends exactly to ``x`` (the fixed-point inverse of the discrete scheme,
§4.4, or the dopri5 inverse ``z* = F(x)`` for exact regeneration), with R^2 of ``log e`` on
``log ||z~ - z_ref||`` and ``log mu_bar`` (:func:`r_squared`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from scipy import stats

from simulate.instability import averaged_instability
from simulate.maps import generate, invert
from simulate.stats import correlation_summary

from simulate.experiments.fig3.measure import DT
from simulate.experiments.fig4.options import PIPELINES, Fig4Options

__all__ = ["data_box", "draw_data", "exact_inverse", "compute_unit", "r_squared"]


def data_box(opts: Fig4Options) -> np.ndarray:
    """The data box ``[min mean - box_margin * std, max mean + box_margin * std]`` per coordinate, ``(2, 2)``."""
    means = np.asarray(opts.means, dtype=float).reshape(-1, 2)
    s = float(np.max(np.asarray(opts.stds, dtype=float)))
    m = float(opts.box_margin) * s
    return np.stack([means.min(0) - m, means.max(0) + m], axis=1)  # (2, 2): per coordinate [lo, hi]


def draw_data(box: np.ndarray, points: int, gen: torch.Generator) -> torch.Tensor:
    """``points`` data ``x`` uniform on ``box`` (float64; the first draws of ``gen``)."""
    lo, hi = torch.as_tensor(box[:, 0], dtype=DT), torch.as_tensor(box[:, 1], dtype=DT)
    return lo + (hi - lo) * torch.rand(int(points), 2, generator=gen, dtype=DT)


def exact_inverse(field: Any, x: torch.Tensor, opts: Fig4Options) -> torch.Tensor:
    """The dopri5 inverse ``z* = F(x)`` (docs/theory.md §4.3) at ``rtol`` / ``atol``."""
    with torch.no_grad():
        return invert(field, x, solver="dopri5", rtol=float(opts.rtol), atol=float(opts.atol)).x


def r_squared(y: np.ndarray, *cols: np.ndarray) -> tuple[float, list[float]]:
    """R^2 and coefficients of the least-squares fit ``y ~ 1 + cols``: ``R^2 = 1 - SS_res / SS_tot``."""
    y = np.asarray(y, dtype=float)
    A = np.column_stack([np.ones_like(y), *[np.asarray(c, dtype=float) for c in cols]])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    return (1.0 - float((resid**2).sum()) / ss if ss > 0 else float("nan")), [float(c) for c in coef]


def _stats3(a: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(a)), "max": float(np.max(a)), "min": float(np.min(a))}


def compute_unit(name: str, field: Any, x: torch.Tensor, zstar: torch.Tensor, opts: Fig4Options,
                 gen: torch.Generator, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run pipeline ``name`` of :data:`PIPELINES` on ``x``: its summary and its per-point arrays.

    ``gen`` draws the ``mu_bar`` directions and is shared by the pipelines in their order (so the
    pipelines are not independent units); ``seed`` seeds the bootstrap intervals.
    """
    inv_solver, gen_solver = PIPELINES[name]
    N = int(opts.steps)
    tight = {"rtol": float(opts.rtol), "atol": float(opts.atol)}
    gen_kw = {"solver": gen_solver, "steps": N, **tight}
    with torch.no_grad():
        zt = invert(field, x, solver=inv_solver, steps=N).x
        out = generate(field, zt, **gen_kw).x
        err = torch.linalg.vector_norm(out - x, dim=1).numpy()
        mu = averaged_instability(field, zt, num_perturbations=int(opts.num_perturbations), eps=float(opts.eps),
                                  generator=gen, gz=out, **gen_kw).numpy()
    disc_star = torch.linalg.vector_norm(zt - zstar, dim=1).numpy()
    exact: dict[str, Any] | None = None
    if gen_solver == "dopri5":
        z_ref, ref_name, ref_err = zstar, "z* = F(x) (dopri5)", None
    else:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp = invert(field, x, solver=gen_solver, steps=N, method="fixed_point", tol=float(opts.fp_tol),
                        max_iter=int(opts.fp_max_iter), on_fail="ignore")
            ref_err = torch.linalg.vector_norm(generate(field, fp.x, **gen_kw).x - x, dim=1).numpy()
        z_ref, ref_name = fp.x, f"G~^-1(x) (fixed point, {gen_solver})"
        exact = {"max_error": float(ref_err.max()), "median_error": float(np.median(ref_err)),
                 "converged": bool(fp.converged), "max_residual": float(fp.residuals.max())}
    disc = torch.linalg.vector_norm(zt - z_ref, dim=1).numpy()
    corr = correlation_summary(err, mu, seed=seed, n_resamples=int(opts.n_resamples), confidence=float(opts.confidence))
    ok = (err > 0) & (disc > 0) & (mu > 0)
    le, ld, lm, lds = np.log(err[ok]), np.log(disc[ok]), np.log(mu[ok]), np.log(disc_star[ok])
    amp = err[ok] / disc[ok]
    r2_d, _ = r_squared(le, ld)
    r2_m, _ = r_squared(le, lm)
    r2_b, coef = r_squared(le, ld, lm)
    decomposition = {
        "reference": ref_name,
        "points_used": int(ok.sum()),
        "spearman_amplification_mu_bar": float(stats.spearmanr(amp, mu[ok]).statistic),
        "pearson_log_amplification_log_mu_bar": float(stats.pearsonr(np.log(amp), lm).statistic),
        "pearson_log_error_log_disc": float(stats.pearsonr(le, ld).statistic),
        "pearson_log_error_log_disc_dopri5": float(stats.pearsonr(le, lds).statistic),
        "pearson_log_error_log_mu_bar": float(stats.pearsonr(le, lm).statistic),
        "r2_disc": r2_d,
        "r2_mu_bar": r2_m,
        "r2_both": r2_b,
        "coef_both": {"intercept": coef[0], "log_disc": coef[1], "log_mu_bar": coef[2]},
        "disc_median": float(np.median(disc)),
        "disc_dopri5_median": float(np.median(disc_star)),
    }
    summary = {
        "inv_solver": inv_solver,
        "gen_solver": gen_solver,
        "steps": N,
        "error": _stats3(err),
        "mu_bar": _stats3(mu),
        "correlation": corr,
        "decomposition": decomposition,
        "exact_inversion": exact,
    }
    per_point = {"error": err, "mu_bar": mu, "disc_ref": disc, "disc_dopri5": disc_star,
                 "exact_inversion_error": ref_err}
    return summary, per_point
