r"""Lemma D.1: ``Lambda_G`` by density ratio, divergence integral and slogdet agree (docs/theory.md §6.1).

``G`` pushes ``phi = N(0, I_n)`` to ``p_g``, so ``n log Lambda_G(z) = log |det J_G(z)|`` can be
computed three independent ways:

* density ratio: ``log phi(z) - log p_g(G(z))`` (one dopri5 solve, the field's exact ``log p_g``);
* divergence integral: ``int_0^1 div v(x_t, t) dt`` accumulated along a separate dopri5 solve;
* slogdet: ``log |det J|`` of the Jacobian of the generation map, by central finite differences
  (step ``fd_step``) of an RK4 map on a grid refined towards ``t = 1`` (``rk4_steps`` steps,
  ``t_k = 1 - (1 - k/N)^grid_power``); ``2 n`` perturbed solves, all batched; ``n <= slogdet_max_n``.

For each field kind (a Gaussian mixture and a box mixture; a single Gaussian for the closed-form
check ``Lambda = s``) and each dimension ``n`` the experiment draws ``points`` noises ``z ~ N(0, I)``
and records ``max_z |log Lambda_a(z) - log Lambda_b(z)|`` for every pair of methods. The
tolerance is tied to the solver accuracy: ``tol = tol_factor * rtol`` (``1e-6`` by default,
dopri5 ``rtol = 1e-8``, ``atol = 1e-10``). The slogdet route is additionally checked for its own
RK4 error (Richardson: ``|slogdet(N) - slogdet(N/2)| / 15``, reported per unit). ``fd_step = 1e-6``
comes from a step study on the box mixture (``1e-5`` leaves a ``~1e-6`` truncation error in
``log Lambda`` there; ``1e-6`` and ``2e-6`` agree to ``~3e-8``). A sweep over ``rtol`` at one
dimension (``sweep_n``) measures how the density-ratio / divergence gap scales with the solver
tolerance (a positive log-log slope: solver error, not a systematic difference).

Keyword overrides of :func:`run` (tests use them for tiny runs; every key of :data:`FAST`):
``fields`` (tuple of ``"gmm"``, ``"box"``, ``"gaussian"``), ``dims``, ``points``, ``slogdet_max_n``,
``rtol``, ``atol``, ``tol_factor``, ``rk4_steps``, ``grid_power``, ``fd_step``, ``sweep_n`` (``None``: no sweep),
``sweep_rtols``, ``gaussian_std``.

``result.json`` numbers: ``units`` (per field and n: ``max_diff`` per method pair, ``mean_log_Lambda``
per method, ``slogdet_error_estimate``), ``max_diff_by_pair`` (over everything), ``tol``, ``sweep``
(per field: rtol -> max gap), ``sweep_slopes`` (log-log slope of the gap against rtol), ``failures``.
Figure: ``lemma_d1.png`` (log Lambda by method vs n; max |difference| vs n with the tolerance).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from simulate.fields import BoxMixture, Gaussian, GaussianMixture
from simulate.instability import log_Lambda_G
from simulate.maps import generate
from simulate.solvers import rk4

from .common import ExperimentResult, RecordStore, Verdict, progress_iter, savefig, write_result, resolve_options

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "FAST",
    "FULL",
    "run",
    "build_field",
    "fd_jacobian",
    "graded_grid",
    "resolve_options",
    "compute_unit",
    "verdict_from_units",
]

NAME = "lemma-d1"
DESCRIPTION = "Lemma D.1: log Lambda_G by density ratio, divergence integral and slogdet agree to solver accuracy"
CLAIM_IDS = ["lemma_d1"]

DT = torch.float64
PAIRS = (("density_ratio", "divergence"), ("density_ratio", "slogdet"), ("divergence", "slogdet"))

FAST: dict[str, Any] = {
    "fields": ("gmm", "box"),
    "dims": (2, 4, 8, 32, 128, 256),
    "points": 8,
    "slogdet_max_n": 8,
    "rtol": 1e-8,
    "atol": 1e-10,
    "tol_factor": 100.0,
    "rk4_steps": 400,
    "grid_power": 2.0,
    "fd_step": 1e-6,
    "sweep_n": 8,
    "sweep_rtols": (1e-4, 1e-6, 1e-8, 1e-10),
    "gaussian_std": 0.3,
}
FULL: dict[str, Any] = FAST | {
    "dims": (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    "points": 32,
}


# ------------------------------------------------------------------------------ shared helpers


def _generator(*parts: int) -> torch.Generator:
    """A torch generator seeded deterministically from integers (e.g. seed, n, kind)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFF)) * 1099511628211) % (1 << 63)
    return torch.Generator().manual_seed(h)


def paper_gmm_2d() -> GaussianMixture:
    """The 2-D three-component Gaussian mixture used for the Fig. 3 / Fig. 4 style experiments."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=DT)
    return GaussianMixture(means, 0.3, torch.tensor([0.3, 0.3, 0.4], dtype=DT))


def build_field(kind: str, n: int, seed: int = 0, *, gaussian_std: float = 0.3, box_sigma: float = 0.05,
                box_side: float = 0.2, m: int = 4) -> Any:
    """A field of ``kind`` in dimension ``n`` (deterministic in ``seed``).

    * ``"gmm"``: n = 2: :func:`paper_gmm_2d`; otherwise ``m`` equal-weight components with means
      ``N(0, I_n)`` and common std 0.3;
    * ``"box"``: ``m`` equal-weight boxes of side ``box_side`` with lower corners uniform in
      ``[0, 1 - box_side]^n`` (so every box lies in ``[0, 1]^n``), kernel ``sigma = box_sigma``;
    * ``"gaussian"``: the single Gaussian ``N(0.5 * 1, gaussian_std^2 I)`` (closed forms:
      ``G(z) = mu + s z``, ``Lambda = s``).
    """
    if kind == "gmm":
        if n == 2:
            return paper_gmm_2d()
        g = _generator(seed, n, 1)
        means = torch.randn(m, n, generator=g, dtype=DT)
        return GaussianMixture(means, 0.3, torch.full((m,), 1.0 / m, dtype=DT))
    if kind == "box":
        g = _generator(seed, n, 2)
        lower = torch.rand(m, n, generator=g, dtype=DT) * (1.0 - box_side)
        return BoxMixture(lower, lower + box_side, torch.full((m,), 1.0 / m, dtype=DT), box_sigma)
    if kind == "gaussian":
        return Gaussian(torch.full((n,), 0.5, dtype=DT), float(gaussian_std))
    raise ValueError(f"field kind must be one of gmm, box, gaussian, got {kind!r}")


def graded_grid(steps: int, power: float = 2.0) -> Tensor:
    """Time grid ``t_k = 1 - (1 - k / steps)^power`` from 0 to 1, refined towards ``t = 1``
    (where the mixtures' flows bend most: the kernel ``sigma`` is small)."""
    u = torch.linspace(0.0, 1.0, int(steps) + 1, dtype=DT)
    ts = 1.0 - (1.0 - u) ** float(power)
    ts[0], ts[-1] = 0.0, 1.0
    return ts


def fd_jacobian(fn: Callable[[Tensor], Tensor], z: Tensor, h: float = 1e-5) -> Tensor:
    """Jacobian of a row-wise map by central differences, all ``2 n`` perturbations in one batch.

    Returns ``J`` of shape ``(B, n_out, n)`` with ``J[b, :, j] = (fn(z_b + h e_j) - fn(z_b - h e_j)) / (2 h)``.
    """
    B, n = z.shape
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    pts = torch.cat([(z[:, None, :] + h * eye).reshape(B * n, n), (z[:, None, :] - h * eye).reshape(B * n, n)])
    with torch.no_grad():
        out = fn(pts)
    plus, minus = out[: B * n].reshape(B, n, -1), out[B * n :].reshape(B, n, -1)
    return ((plus - minus) / (2.0 * h)).transpose(1, 2)


# ------------------------------------------------------------------------------ one unit
def compute_unit(kind: str, n: int, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    """All three methods at ``points`` noises in dimension ``n`` for field ``kind``."""
    t0 = time.perf_counter()
    field = build_field(kind, n, seed, gaussian_std=opts["gaussian_std"])
    z = torch.randn(opts["points"], n, generator=_generator(seed, n, 7), dtype=DT)
    tight = {"solver": "dopri5", "rtol": opts["rtol"], "atol": opts["atol"]}
    with torch.no_grad():
        vals: dict[str, np.ndarray] = {
            "density_ratio": log_Lambda_G(field, z, method="density_ratio", **tight).numpy(),
            "divergence": (generate(field, z, logdet=True, **tight).logdet / n).numpy(),
        }
    slog_err = None
    if n <= opts["slogdet_max_n"]:
        steps, h = int(opts["rk4_steps"]), float(opts["fd_step"])

        def slog(k: int, step: float) -> np.ndarray:
            ts = graded_grid(k, opts["grid_power"])
            J = fd_jacobian(lambda p: rk4(field, p, ts).x, z, step)
            return (torch.linalg.slogdet(J).logabsdet / n).numpy()

        fine = slog(steps, h)
        vals["slogdet"] = fine
        # Richardson estimate of the RK4 error of the slogdet route (order 4: |S - S/2| / 15)
        slog_err = float(np.max(np.abs(fine - slog(steps // 2, h))) / 15.0)
    max_diff = {f"{a}-{b}": float(np.max(np.abs(vals[a] - vals[b]))) for a, b in PAIRS if a in vals and b in vals}
    return {
        "field": kind,
        "n": n,
        "points": int(z.shape[0]),
        "log_Lambda": {k: v.tolist() for k, v in vals.items()},
        "mean_log_Lambda": {k: float(np.mean(v)) for k, v in vals.items()},
        "max_diff": max_diff,
        "slogdet_error_estimate": slog_err,
        "seconds": time.perf_counter() - t0,
    }


def compute_sweep(kind: str, n: int, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    """Density-ratio / divergence gap as a function of the dopri5 tolerance (solver error check)."""
    field = build_field(kind, n, seed, gaussian_std=opts["gaussian_std"])
    z = torch.randn(opts["points"], n, generator=_generator(seed, n, 7), dtype=DT)
    gaps = {}
    with torch.no_grad():
        for rtol in opts["sweep_rtols"]:
            kw = {"solver": "dopri5", "rtol": rtol, "atol": rtol * 1e-2}
            ratio = log_Lambda_G(field, z, method="density_ratio", **kw)
            div = generate(field, z, logdet=True, **kw).logdet / n
            gaps[f"{rtol:g}"] = float((ratio - div).abs().max())
    return {"field": kind, "n": n, "gaps": gaps}


# ------------------------------------------------------------------------------ verdict
def verdict_from_units(units: list[dict[str, Any]], tol: float, rtol: float, atol: float) -> tuple[Verdict, list[str], dict[str, float]]:
    """``verified`` when every pair of methods differs by at most ``tol`` at every point of every unit."""
    failures = []
    by_pair: dict[str, float] = {}
    for u in units:
        for pair, d in u["max_diff"].items():
            by_pair[pair] = max(by_pair.get(pair, 0.0), d)
            if not (d <= tol):
                failures.append(f"{u['field']} n={u['n']} {pair}: {d:.2e}")
    worst = max(by_pair.values()) if by_pair else float("nan")
    key = f"max |diff log Lambda| = {worst:.2e} (tol {tol:.0e})"
    n_all = sorted({u["n"] for u in units})
    fields = sorted({u["field"] for u in units})
    base = (
        f"{len(units)} (field, n) units, fields {', '.join(fields)}, n = {n_all}; dopri5 rtol={rtol:g}, "
        f"atol={atol:g}; tolerance tol = {tol:.0e} on max_z |log Lambda_a - log Lambda_b| per pair; "
        + ", ".join(f"{p}: {v:.2e}" for p, v in by_pair.items())
    )
    if not units:
        return Verdict("refuted", "no units", "nothing was measured"), ["no units"], by_pair
    if not failures:
        return Verdict("verified", key, base + "; all within tol"), failures, by_pair
    bad_n = sorted({u["n"] for u in units if any(not (d <= tol) for d in u["max_diff"].values())})
    good_n = [n for n in n_all if n not in bad_n]
    if good_n and bad_n and min(bad_n) > max(good_n):
        status = f"holds in regime n <= {max(good_n)} (to tol {tol:.0e}; larger n exceed it)"
    else:
        status = "refuted"
    return Verdict(status, key, base + "; outside tol: " + "; ".join(failures[:8])), failures, by_pair


# ------------------------------------------------------------------------------ figure
def _figure(units: list[dict[str, Any]], tol: float, out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    markers = {"density_ratio": "o", "divergence": "x", "slogdet": "s"}
    fields = sorted({u["field"] for u in units})
    for kind in fields:
        us = sorted((u for u in units if u["field"] == kind), key=lambda u: u["n"])
        for method, mk in markers.items():
            pts = [(u["n"], u["mean_log_Lambda"][method]) for u in us if method in u["mean_log_Lambda"]]
            if pts:
                axes[0].plot(*zip(*pts), marker=mk, ls="-" if method == "density_ratio" else "none",
                             label=f"{kind}: {method}", mfc="none", ms=7)
        for pair in sorted({p for u in us for p in u["max_diff"]}):
            pts = [(u["n"], max(u["max_diff"][pair], 1e-17)) for u in us if pair in u["max_diff"]]
            axes[1].plot(*zip(*pts), marker="o", label=f"{kind}: {pair}")
    axes[1].axhline(tol, color="k", ls="--", label=f"tol {tol:.0e}")
    axes[0].set(xscale="log", xlabel="n", ylabel="mean log Lambda_G(z)", title="log Lambda_G by three methods")
    axes[1].set(xscale="log", yscale="log", xlabel="n", ylabel="max |diff log Lambda|", title="agreement between methods")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    return savefig(fig, out_dir, "lemma_d1.png")


# ------------------------------------------------------------------------------ run
def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Lemma D.1 check; see the module docstring for the options and outputs."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = resolve_options(FULL if full else FAST, overrides)
    tol = float(opts["tol_factor"]) * float(opts["rtol"])
    params = {"full": full, "seed": seed, **opts}
    store = RecordStore(out_dir, params)
    work: list[tuple[str, Any]] = [("unit", (k, n)) for k in opts["fields"] for n in opts["dims"]]
    if opts["sweep_n"] is not None:
        work += [("sweep", (k, int(opts["sweep_n"]))) for k in opts["fields"]]
    for what, (kind, n) in progress_iter(work, "lemma-d1", progress):
        key = f"{what}:{kind}:n={n}"
        if store.done(key):
            continue
        if what == "unit":
            store.add(key, compute_unit(kind, int(n), opts, seed))
        else:
            store.add(key, compute_sweep(kind, int(n), opts, seed))
    units = [store.get(f"unit:{k}:n={n}") for k in opts["fields"] for n in opts["dims"]]
    sweeps = [store.get(f"sweep:{k}:n={opts['sweep_n']}") for k in opts["fields"]] if opts["sweep_n"] is not None else []
    verdict, failures, by_pair = verdict_from_units(units, tol, opts["rtol"], opts["atol"])
    slopes = {}
    for sw in sweeps:
        r = np.array([float(k) for k in sw["gaps"]])
        g = np.array(list(sw["gaps"].values()))
        ok = g > 0
        slopes[sw["field"]] = float(np.polyfit(np.log(r[ok]), np.log(g[ok]), 1)[0]) if ok.sum() >= 2 else None
    if sweeps:
        verdict.evidence += "; gap vs dopri5 rtol (n={}): ".format(opts["sweep_n"]) + "; ".join(
            f"{sw['field']}: " + ", ".join(f"{k}->{v:.1e}" for k, v in sw["gaps"].items()) for sw in sweeps
        ) + "; log-log slope of the gap vs rtol: " + ", ".join(
            f"{k}: {v:.2f}" if v is not None else f"{k}: n/a" for k, v in slopes.items()
        ) + " (> 0: the gap is solver error that shrinks with the tolerance)"
    figures = [_figure(units, tol, out_dir)]
    numbers = {
        "tol": tol,
        "units": [{k: v for k, v in u.items() if k != "log_Lambda"} for u in units],
        "log_Lambda": {f"{u['field']}:n={u['n']}": u["log_Lambda"] for u in units},
        "max_diff_by_pair": by_pair,
        "sweep": {sw["field"]: sw["gaps"] for sw in sweeps},
        "sweep_slopes": slopes,
        "failures": failures,
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), verdict, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
