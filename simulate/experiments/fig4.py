r"""Fig. 4(a, b) (Section 3.2, Appendix E.1): reconstruction error correlates with the instability coefficient.

The paper's numeric study, with its unrecoverable details fixed here (all recorded in ``result.json``):

* generation distribution (Fig. 4(a)): the 2-D mixture of three Gaussians with means ``(-2, -1)``,
  ``(2, -1)``, ``(0, 2)``, weights ``(0.4, 0.4, 0.2)`` and common std ``0.5`` (the Fig. 3 layout
  with a wider std, so that the fixed-point "exact inversion" of a 50-step scheme converges);
* data ``x`` uniform on the box covering the mixture: ``[min mean - box_margin * std,
  max mean + box_margin * std]`` per coordinate (``box_margin = 2``);
* reconstruction: inversion ``z~ = F~(x)`` by the scheme integrated backward, regeneration
  ``x^ = G~(z~)`` by the same scheme, ``N = steps = 50`` uniform steps each (the paper's ``N`` is not
  recoverable); error ``e = ||x^ - x||``;
* averaged instability coefficient (App. E.1 step 4) of the regeneration map at the inverted noise:
  ``mu_bar(z~) = (1/K) sum_k ||G~(z~ + eps d_k) - G~(z~)|| / eps``, ``d_k`` uniform on the unit circle,
  ``K = num_perturbations = 16``, ``eps = 1e-3``.

Pipelines (``pipelines`` option):

* ``"euler"``: Euler inversion + Euler regeneration (the paper's Fig. 4(b));
* ``"heun"``: Heun inversion + Heun regeneration (the paper's App. B.1 variant);
* ``"euler_exact"``: Euler inversion + exact (dopri5, ``rtol = 1e-9``) regeneration -- the setting
  of Theorem 3.1 -- with ``mu_bar`` of the exact map.

For the two same-scheme pipelines the **exact inversion baseline** is the fixed-point inversion of
the discrete scheme (``invert(..., method="fixed_point")``) followed by the same regeneration:
its error collapses to the fixed-point tolerance (reported as ``exact_inversion``), so the
reconstruction error of the plain pipelines is entirely due to the inverted-noise discrepancy.

**Decomposition** ``e = ||z~ - z_ref|| x amplification``: with ``z_ref`` the noise that the
regeneration map sends exactly to ``x`` (the fixed-point inverse ``G~^{-1}(x)`` for same-scheme
regeneration, the dopri5 inverse ``z* = F(x)`` for exact regeneration), ``e = mu_G~(z_ref, z~ -
z_ref) ||z~ - z_ref||`` exactly. Reported per pipeline: Spearman of the amplification
``e / ||z~ - z_ref||`` with ``mu_bar``; correlations of ``log e`` with ``log ||z~ - z_ref||``, with
``log ||z~ - z*||`` (the dopri5 reference, for every pipeline) and with ``log mu_bar``; and the
variance of ``log e`` explained (R^2) by least squares on ``log ||z~ - z_ref||`` alone, on
``log mu_bar`` alone and on both.

Statistics (:func:`correlation_summary`): Pearson (on ``log e`` vs ``log mu_bar``) and Spearman
(``scipy.stats``) with p-values and 95% bootstrap intervals (``scipy.stats.bootstrap``, paired,
BCa, ``n_resamples`` seeded resamples).

Verdict (:func:`classify_correlation` per pipeline): a pipeline shows a positive correlation when
Spearman > 0 and the lower end of its 95% bootstrap interval is > 0. ``verified`` if both the Euler
and the Heun pipelines do; ``holds in regime: Euler ...`` if only Euler does; ``refuted`` otherwise.

Keyword overrides of :func:`run` (every key of :data:`FAST`): ``means``, ``stds``, ``weights``,
``box_margin``, ``points``, ``steps``, ``num_perturbations``, ``eps``, ``pipelines``, ``rtol``,
``atol``, ``fp_tol``, ``fp_max_iter``, ``n_resamples``, ``confidence``, ``density_n``.

``result.json`` numbers (keys):

* ``field`` (``means``, ``stds``, ``weights``), ``box`` (``[[x_lo, x_hi], [y_lo, y_hi]]``);
* ``pipelines``: per pipeline name: ``inv_solver``, ``gen_solver``, ``steps``, ``error`` (``median``,
  ``max``, ``min``), ``mu_bar`` (``median``, ``max``, ``min``), ``correlation`` (the
  :func:`correlation_summary` dict: ``n``, ``pearson_r``, ``pearson_p``, ``pearson_ci``,
  ``spearman_rho``, ``spearman_p``, ``spearman_ci``, ``positive``, ``negative``), ``decomposition``
  (``reference``, ``spearman_amplification_mu_bar``, ``pearson_log_error_log_disc``,
  ``pearson_log_error_log_disc_dopri5``, ``pearson_log_error_log_mu_bar``, ``r2_disc``,
  ``r2_mu_bar``, ``r2_both``, ``coef_both``, ``disc_median``), ``exact_inversion`` (same-scheme
  pipelines: ``max_error``, ``median_error``, ``converged``, ``max_residual``);
* ``per_point``: ``x``, and per pipeline ``error``, ``mu_bar``, ``disc_ref``, ``disc_dopri5``;
* ``timings``.

Figures: ``fig4a_density.png`` (``p_g`` and the data box), ``fig4b_scatter.png`` (log-log error vs
``mu_bar`` per pipeline with the exact-inversion errors; below: amplification vs ``mu_bar``).
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from simulate.instability import averaged_instability
from simulate.maps import generate, invert

from .common import ExperimentResult, Verdict, savefig, write_result, resolve_options
from .fig3 import build_field

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "FAST",
    "FULL",
    "PIPELINES",
    "run",
    "build_field",
    "resolve_options",
    "correlation_summary",
    "classify_correlation",
    "r_squared",
]

NAME = "fig4"
DESCRIPTION = "Fig. 4(a, b): 2-D reconstruction error correlates with the averaged instability coefficient"
CLAIM_IDS = ["fig4b"]

DT = torch.float64

#: pipeline name -> (inversion solver, regeneration solver)
PIPELINES: dict[str, tuple[str, str]] = {
    "euler": ("euler", "euler"),
    "heun": ("heun", "heun"),
    "euler_exact": ("euler", "dopri5"),
}

FAST: dict[str, Any] = {
    "means": ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.0)),
    "stds": 0.5,
    "weights": (0.4, 0.4, 0.2),
    "box_margin": 2.0,
    "points": 400,
    "steps": 50,
    "num_perturbations": 16,
    "eps": 1e-3,
    "pipelines": ("euler", "heun", "euler_exact"),
    "rtol": 1e-9,
    "atol": 1e-11,
    "fp_tol": 1e-12,
    "fp_max_iter": 500,
    "n_resamples": 2000,
    "confidence": 0.95,
    "density_n": 200,
}
FULL: dict[str, Any] = FAST | {
    "points": 2000,
    "num_perturbations": 32,
    "n_resamples": 5000,
}


# ------------------------------------------------------------------------------ helpers


def _box(opts: dict[str, Any]) -> np.ndarray:
    means = np.asarray(opts["means"], dtype=float).reshape(-1, 2)
    s = float(np.max(np.asarray(opts["stds"], dtype=float)))
    m = float(opts["box_margin"]) * s
    return np.stack([means.min(0) - m, means.max(0) + m], axis=1)  # (2, 2): per coordinate [lo, hi]


def _pearson_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    xm = x - x.mean(axis=axis, keepdims=True)
    ym = y - y.mean(axis=axis, keepdims=True)
    den = np.sqrt((xm * xm).sum(axis=axis) * (ym * ym).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xm * ym).sum(axis=axis) / den


def _spearman_vec(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pearson_vec(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


def _bootstrap_ci(stat: Any, x: np.ndarray, y: np.ndarray, seed: int, n_resamples: int, confidence: float) -> list[float | None]:
    kwargs: dict[str, Any] = {}
    if "rng" in inspect.signature(stats.bootstrap).parameters:
        kwargs["rng"] = np.random.default_rng(seed)
    else:  # older scipy
        kwargs["random_state"] = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((x, y), stat, paired=True, vectorized=True, n_resamples=int(n_resamples),
                              confidence_level=float(confidence), method="BCa", **kwargs)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None]


def correlation_summary(x: Any, y: Any, *, seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95,
                        log_pearson: bool = True) -> dict[str, Any]:
    """Pearson and Spearman correlation of ``x`` and ``y`` with p-values and bootstrap intervals.

    Pearson is taken on ``log x``, ``log y`` when ``log_pearson`` and both are positive (the
    log-log scatter of Fig. 4(b)); Spearman is rank-based (invariant to the log). The intervals are
    paired BCa bootstrap intervals (``scipy.stats.bootstrap``, ``n_resamples`` resamples, seeded).
    ``positive`` / ``negative``: Spearman's interval lies entirely above / below 0.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    logged = bool(log_pearson and np.all(x > 0) and np.all(y > 0))
    px, py = (np.log(x), np.log(y)) if logged else (x, y)
    out: dict[str, Any] = {"n": int(x.size), "pearson_on_logs": logged}
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        out.update(pearson_r=None, pearson_p=None, pearson_ci=[None, None], spearman_rho=None, spearman_p=None,
                   spearman_ci=[None, None], positive=False, negative=False)
        return out
    pr = stats.pearsonr(px, py)
    sr = stats.spearmanr(x, y)
    out["pearson_r"], out["pearson_p"] = float(pr.statistic), float(pr.pvalue)
    out["spearman_rho"], out["spearman_p"] = float(sr.statistic), float(sr.pvalue)
    out["pearson_ci"] = _bootstrap_ci(_pearson_vec, px, py, seed, n_resamples, confidence)
    out["spearman_ci"] = _bootstrap_ci(_spearman_vec, x, y, seed + 1, n_resamples, confidence)
    lo, hi = out["spearman_ci"]
    out["positive"] = bool(out["spearman_rho"] > 0 and lo is not None and lo > 0)
    out["negative"] = bool(out["spearman_rho"] < 0 and hi is not None and hi < 0)
    return out


def classify_correlation(summary: dict[str, Any]) -> str:
    """``"positive"``, ``"negative"`` or ``"none"`` from a :func:`correlation_summary` dict."""
    if summary.get("positive"):
        return "positive"
    if summary.get("negative"):
        return "negative"
    return "none"


def r_squared(y: np.ndarray, *cols: np.ndarray) -> tuple[float, list[float]]:
    """R^2 and coefficients of the least-squares fit ``y ~ 1 + cols``."""
    y = np.asarray(y, dtype=float)
    A = np.column_stack([np.ones_like(y), *[np.asarray(c, dtype=float) for c in cols]])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    return (1.0 - float((resid**2).sum()) / ss if ss > 0 else float("nan")), [float(c) for c in coef]


def _stats3(a: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(a)), "max": float(np.max(a)), "min": float(np.min(a))}


# ------------------------------------------------------------------------------ one pipeline
def _run_pipeline(name: str, field: Any, x: torch.Tensor, zstar: torch.Tensor, opts: dict[str, Any],
                  gen: torch.Generator, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    inv_solver, gen_solver = PIPELINES[name]
    N = int(opts["steps"])
    tight = {"rtol": float(opts["rtol"]), "atol": float(opts["atol"])}
    gen_kw = {"solver": gen_solver, "steps": N, **tight}
    with torch.no_grad():
        zt = invert(field, x, solver=inv_solver, steps=N).x
        out = generate(field, zt, **gen_kw).x
        err = torch.linalg.vector_norm(out - x, dim=1).numpy()
        mu = averaged_instability(field, zt, num_perturbations=int(opts["num_perturbations"]), eps=float(opts["eps"]),
                                  generator=gen, gz=out, **gen_kw).numpy()
    disc_star = torch.linalg.vector_norm(zt - zstar, dim=1).numpy()
    exact: dict[str, Any] | None = None
    if gen_solver == "dopri5":
        z_ref, ref_name, ref_err = zstar, "z* = F(x) (dopri5)", None
    else:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp = invert(field, x, solver=gen_solver, steps=N, method="fixed_point", tol=float(opts["fp_tol"]),
                        max_iter=int(opts["fp_max_iter"]), on_fail="ignore")
            ref_err = torch.linalg.vector_norm(generate(field, fp.x, **gen_kw).x - x, dim=1).numpy()
        z_ref, ref_name = fp.x, f"G~^-1(x) (fixed point, {gen_solver})"
        exact = {"max_error": float(ref_err.max()), "median_error": float(np.median(ref_err)),
                 "converged": bool(fp.converged), "max_residual": float(fp.residuals.max())}
    disc = torch.linalg.vector_norm(zt - z_ref, dim=1).numpy()
    corr = correlation_summary(err, mu, seed=seed, n_resamples=int(opts["n_resamples"]), confidence=float(opts["confidence"]))
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


# ------------------------------------------------------------------------------ figures
def _figures(out_dir: Path, opts: dict[str, Any], field: Any, box: np.ndarray, x: np.ndarray,
             summaries: dict[str, Any], points: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    figs = []
    n = int(opts["density_n"])
    pad = 0.5
    xs = torch.linspace(box[0, 0] - pad, box[0, 1] + pad, n, dtype=DT)
    ys = torch.linspace(box[1, 0] - pad, box[1, 1] + pad, n, dtype=DT)
    P = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        dens = field.log_prob(P, 1.0).exp().reshape(n, n).numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.pcolormesh(xs.numpy(), ys.numpy(), dens, shading="auto", cmap="Blues")
    fig.colorbar(im, ax=ax, label="p_g(x)")
    ax.add_patch(Rectangle((box[0, 0], box[1, 0]), box[0, 1] - box[0, 0], box[1, 1] - box[1, 0], fc="none", ec="k", ls="--",
                           label="data box (x uniform)"))
    ax.scatter(x[:, 0], x[:, 1], s=3, c="k", alpha=0.4)
    ax.set(xlabel="x", ylabel="y", aspect="equal", title="Fig. 4(a): generation distribution p_g")
    ax.legend(loc="upper right", fontsize=8)
    figs.append(savefig(fig, out_dir, "fig4a_density.png"))

    names = list(summaries)
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 8.6), squeeze=False)
    for j, name in enumerate(names):
        s, p = summaries[name], points[name]
        c = s["correlation"]
        ax = axes[0, j]
        ax.scatter(p["mu_bar"], p["error"], s=6, alpha=0.6, label=f"{s['inv_solver']} inv. + {s['gen_solver']} regen.")
        if p["exact_inversion_error"] is not None:
            ax.scatter(p["mu_bar"], np.maximum(p["exact_inversion_error"], 1e-17), s=6, marker="x", c="C3", alpha=0.6,
                       label="exact (fixed-point) inversion")
        rho, ci = c["spearman_rho"], c["spearman_ci"]
        ci_txt = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None and ci[1] is not None else "[n/a]"
        ax.set(xscale="log", yscale="log", xlabel="averaged instability coefficient mu_bar(z~)", ylabel="reconstruction error ||x^ - x||",
               title=f"{name}: Spearman {rho:.3f} {ci_txt}\nPearson(log) {c['pearson_r']:.3f}, N={s['steps']}")
        ax.legend(fontsize=7, loc="lower right")
        ax = axes[1, j]
        amp = p["error"] / np.maximum(p["disc_ref"], 1e-300)
        ax.scatter(p["mu_bar"], amp, s=6, alpha=0.6, c="C2")
        lim = [np.min(p["mu_bar"]), np.max(p["mu_bar"])]
        ax.plot(lim, lim, "k--", lw=0.8, label="amplification = mu_bar")
        d = s["decomposition"]
        ax.set(xscale="log", yscale="log", xlabel="mu_bar(z~)", ylabel="error / ||z~ - z_ref||",
               title=f"amplification, z_ref = {d['reference']}\nR^2 log e: disc {d['r2_disc']:.2f}, mu {d['r2_mu_bar']:.2f}, both {d['r2_both']:.2f}")
        ax.legend(fontsize=7)
    figs.append(savefig(fig, out_dir, "fig4b_scatter.png"))
    return figs


# ------------------------------------------------------------------------------ run
def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Fig. 4(a, b) study; see the module docstring for the options and outputs."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = resolve_options(FULL if full else FAST, overrides)
    field = build_field(opts)
    box = _box(opts)
    gen = torch.Generator().manual_seed(int(seed))
    lo, hi = torch.as_tensor(box[:, 0], dtype=DT), torch.as_tensor(box[:, 1], dtype=DT)
    x = lo + (hi - lo) * torch.rand(int(opts["points"]), 2, generator=gen, dtype=DT)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with torch.no_grad():
        zstar = invert(field, x, solver="dopri5", rtol=float(opts["rtol"]), atol=float(opts["atol"])).x
    timings["dopri5_inversion"] = time.perf_counter() - t
    summaries: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for name in opts["pipelines"]:
        t = time.perf_counter()
        summaries[name], points[name] = _run_pipeline(name, field, x, zstar, opts, gen, seed)
        timings[name] = time.perf_counter() - t

    cls = {name: classify_correlation(s["correlation"]) for name, s in summaries.items()}
    have = [p for p in ("euler", "heun") if p in summaries]

    def fmt(name: str) -> str:
        c = summaries[name]["correlation"]
        lo_, hi_ = c["spearman_ci"]
        plo, phi = c["pearson_ci"]
        return (f"{name}: Spearman {c['spearman_rho']:.3f} (95% CI [{lo_:.3f}, {hi_:.3f}], p={c['spearman_p']:.1e}), "
                f"Pearson(log-log) {c['pearson_r']:.3f} (CI [{plo:.3f}, {phi:.3f}], p={c['pearson_p']:.1e})"
                if c["spearman_rho"] is not None and lo_ is not None and plo is not None else f"{name}: correlation undefined")

    if "euler" in cls and cls["euler"] == "positive" and all(cls[p] == "positive" for p in have):
        status = "verified"
    elif cls.get("euler") == "positive":
        others = ", ".join(f"{p}: {cls[p]}" for p in have if p != "euler")
        status = f"holds in regime: Euler inversion + regeneration (positive); {others}"
    else:
        status = "refuted"
    key = "; ".join(fmt(p) for p in have) if have else "no Euler / Heun pipeline run"
    parts = []
    for name, s in summaries.items():
        d = s["decomposition"]
        ex = s["exact_inversion"]
        parts.append(
            f"{fmt(name)}; error median {s['error']['median']:.2e} (max {s['error']['max']:.2e}); "
            f"decomposition vs {d['reference']}: Spearman(amplification, mu_bar) {d['spearman_amplification_mu_bar']:.3f}, "
            f"corr(log e, log ||z~ - z_ref||) {d['pearson_log_error_log_disc']:.3f}, corr(log e, log ||z~ - z*_dopri5||) "
            f"{d['pearson_log_error_log_disc_dopri5']:.3f}, corr(log e, log mu_bar) {d['pearson_log_error_log_mu_bar']:.3f}; "
            f"R^2 of log e: disc alone {d['r2_disc']:.3f}, mu_bar alone {d['r2_mu_bar']:.3f}, both {d['r2_both']:.3f}"
            + (f"; exact (fixed-point) inversion error max {ex['max_error']:.1e} (converged: {ex['converged']})" if ex else "")
        )
    evidence = (
        f"Positive correlation = Spearman > 0 with its {opts['confidence']:.0%} bootstrap interval above 0. "
        f"{opts['points']} points x uniform on {box.tolist()}; mixture means {np.asarray(opts['means']).tolist()}, std "
        f"{opts['stds']}, weights {list(opts['weights'])}; N = {opts['steps']} steps; mu_bar with K = "
        f"{opts['num_perturbations']}, eps = {opts['eps']:g}. " + " | ".join(parts)
    )
    verdict = Verdict(status, key, evidence)
    figures = _figures(out_dir, opts, field, box, x.numpy(), summaries, points)
    params = {"full": full, "seed": seed, **opts}
    numbers = {
        "field": {"means": opts["means"], "stds": opts["stds"], "weights": opts["weights"]},
        "box": box,
        "pipelines": summaries,
        "classification": cls,
        "per_point": {"x": x.numpy(), **points},
        "timings": timings,
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), verdict, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
