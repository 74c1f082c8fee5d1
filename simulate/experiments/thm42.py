r"""Theorem 4.2 (docs/theory.md §7): mixtures of Gaussian neighbours approximate a target density as ``m`` grows.

Target (``target`` option): ``"ring"`` -- the 2-D Gaussian ring ``p(x) ~ exp(-(|x| - R)^2 / (2 w^2))``
with radius ``R = 1`` and radial width ``w = 0.1`` (normalised in closed form:
``Z = 2 pi (w^2 exp(-R^2/(2 w^2)) + w sqrt(2 pi) Phi(R/w))``), or ``"annulus"`` -- uniform on
``R - a <= |x| <= R + a`` with ``a = annulus_half_width``.

Approximants: for each ``m = k^2`` in ``ms`` (default 4, 16, 64, 256) the square ``[-L, L]^2``
(``L = half_extent = 1.5``, which holds all but ~3e-7 of the ring's mass) is tiled by ``k x k``
equal boxes of side ``2 L / k``; box ``i`` gets the weight ``w_i`` = target mass of the box
(midpoint quadrature on a ``quad_n x quad_n`` grid, then renormalised; boxes with zero mass are
dropped, so ``m_effective <= m``), and the mixture of Gaussian neighbours is
``p_m = sum_i w_i U(B_i) * N(0, sigma_m^2 I)`` (:class:`simulate.fields.BoxMixture`) with
``sigma_m = sigma_factor * side`` -- box size and ``sigma`` shrink together as ``m`` grows.

Distances:

* ``L1 = int |p_m - p|`` on a grid of spacing ``eval_spacing`` covering
  ``[-L - 5 sigma_m, L + 5 sigma_m]^2`` (midpoint rule; target and tiling are symmetric under
  ``x -> -x``, ``y -> -y``, so only the quadrant ``x, y > 0`` is evaluated, times 4), with ``p_m`` the field's exact
  ``log_prob(x, 1.0)`` (the density of ``x_1 ~ p_g``) and ``p`` the target's closed form; the grid's
  captured masses of ``p_m`` and ``p`` are reported (both ~1). Since the Levy-Prokhorov distance of
  Theorem 4.2 is at most the total variation distance, ``LP(p_m, p) <= TV = L1 / 2``
  (``lp_upper_bound``).
* sliced 1-Wasserstein distance from ``n_samples`` samples of each (``n_projections`` random
  directions; sorted projections), with the sampling noise floor = the same distance between two
  independent target samples (informational; the verdict does not use it).

Verdict (:func:`is_monotone_decreasing` on the L1 sequence): ``verified`` if the L1 distance
decreases strictly with each ``m``; ``holds in regime m <= ...`` if it decreases up to some ``m``
and then stalls; ``refuted`` otherwise.

Keyword overrides of :func:`run` (every key of :data:`FAST`): ``target``, ``radius``, ``width``,
``annulus_half_width``, ``half_extent``, ``ms``, ``sigma_factor``, ``quad_n``, ``eval_spacing``,
``n_samples``, ``n_projections``.

``result.json`` numbers (keys): ``target`` (``kind``, ``radius``, ``width`` / ``annulus_half_width``,
``mass_in_square``), ``rows`` (per ``m``: ``m``, ``k``, ``m_effective``, ``side``, ``sigma``, ``l1``,
``lp_upper_bound``, ``mass_mixture``, ``mass_target``, ``sliced_w1``, ``eval_points``, ``seconds``),
``l1`` (list over ``ms``), ``sliced_w1`` (list), ``sliced_w1_noise_floor``, ``l1_monotone``,
``sliced_w1_monotone``, ``l1_ratio_last_first``.

Figures: ``thm42_densities.png`` (target and each approximant), ``thm42_distances.png`` (L1 and
sliced W1 vs ``m``, log-log).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.special import ndtr

from simulate.fields import BoxMixture

from .common import ExperimentResult, Verdict, savefig, write_result, resolve_options

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "FAST",
    "FULL",
    "run",
    "resolve_options",
    "target_density",
    "sample_target",
    "box_mixture_approximant",
    "sliced_w1",
    "is_monotone_decreasing",
    "classify_monotone",
]

NAME = "thm42"
DESCRIPTION = "Thm. 4.2: mixtures of Gaussian neighbours approximate a 2-D ring density (L1 decreasing in m)"
CLAIM_IDS = ["thm42"]

DT = torch.float64

FAST: dict[str, Any] = {
    "target": "ring",
    "radius": 1.0,
    "width": 0.1,
    "annulus_half_width": 0.2,
    "half_extent": 1.5,
    "ms": (4, 16, 64, 256),
    "sigma_factor": 0.5,
    "quad_n": 960,
    "eval_spacing": 0.02,
    "n_samples": 4000,
    "n_projections": 64,
}
FULL: dict[str, Any] = FAST | {
    "ms": (4, 16, 64, 256, 1024),
    "eval_spacing": 0.01,
    "n_samples": 20000,
    "n_projections": 128,
}


# ------------------------------------------------------------------------------ helpers
def _options(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """:func:`resolve_options` plus this experiment's checks (target name, square ``m``)."""
    opts = resolve_options(defaults, overrides)
    if opts["target"] not in ("ring", "annulus"):
        raise ValueError(f"target must be 'ring' or 'annulus', got {opts['target']!r}")
    for m in opts["ms"]:
        k = math.isqrt(int(m))
        if k * k != int(m) or k < 1:
            raise ValueError(f"every m in ms must be a perfect square (k x k tiling), got {m}")
    return opts


def target_density(P: np.ndarray, opts: dict[str, Any]) -> np.ndarray:
    """The target density at points ``P`` of shape ``(..., 2)`` (closed form, normalised)."""
    r = np.linalg.norm(P, axis=-1)
    R = float(opts["radius"])
    if opts["target"] == "ring":
        w = float(opts["width"])
        Z = 2.0 * math.pi * (w * w * math.exp(-R * R / (2 * w * w)) + w * math.sqrt(2 * math.pi) * float(ndtr(R / w)))
        return np.exp(-((r - R) ** 2) / (2 * w * w)) / Z
    a = float(opts["annulus_half_width"])
    r1, r2 = max(R - a, 0.0), R + a
    return ((r >= r1) & (r <= r2)).astype(float) / (math.pi * (r2 * r2 - r1 * r1))


def sample_target(n: int, opts: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """``n`` exact samples of the target (radius by rejection for the ring, inverse CDF for the annulus)."""
    R = float(opts["radius"])
    if opts["target"] == "ring":
        w = float(opts["width"])
        # radial density ~ r exp(-(r - R)^2 / 2 w^2) on r >= 0: propose N(R, w^2), accept with prob r / r_max
        r_max = R + 10 * w
        out: list[np.ndarray] = []
        have = 0
        while have < n:
            r = rng.normal(R, w, size=2 * n)
            keep = (r > 0) & (rng.random(2 * n) < np.clip(r / r_max, 0, 1))
            out.append(r[keep])
            have += int(keep.sum())
        r = np.concatenate(out)[:n]
    else:
        a = float(opts["annulus_half_width"])
        r1, r2 = max(R - a, 0.0), R + a
        r = np.sqrt(r1 * r1 + (r2 * r2 - r1 * r1) * rng.random(n))
    th = rng.uniform(0, 2 * math.pi, size=n)
    return np.stack([r * np.cos(th), r * np.sin(th)], -1)


def box_mixture_approximant(m: int, opts: dict[str, Any]) -> tuple[BoxMixture, dict[str, Any]]:
    """The ``k x k`` box tiling of ``[-L, L]^2`` with target-mass weights and ``sigma = sigma_factor * side``."""
    k = math.isqrt(int(m))
    L = float(opts["half_extent"])
    F = int(opts["quad_n"])
    F = max(k, F // k * k)  # a multiple of k: each box holds (F / k)^2 quadrature cells
    hq = 2 * L / F
    c = (np.arange(F) + 0.5) * hq - L
    X, Y = np.meshgrid(c, c, indexing="xy")
    cell = target_density(np.stack([X, Y], -1), opts) * hq * hq
    q = F // k
    mass = cell.reshape(k, q, k, q).sum(axis=(1, 3))  # [box row (y), box column (x)]
    side = 2 * L / k
    lo = -L + side * np.arange(k)
    LX, LY = np.meshgrid(lo, lo, indexing="xy")
    lower = np.stack([LX.ravel(), LY.ravel()], -1)
    w = mass.ravel()
    keep = w > 0
    lower, w = lower[keep], w[keep] / w[keep].sum()
    sigma = float(opts["sigma_factor"]) * side
    field = BoxMixture(torch.as_tensor(lower, dtype=DT), torch.as_tensor(lower + side, dtype=DT),
                       torch.as_tensor(w, dtype=DT), sigma)
    return field, {"m": int(m), "k": k, "m_effective": int(keep.sum()), "side": side, "sigma": sigma,
                   "mass_in_square": float(cell.sum())}


def sliced_w1(a: np.ndarray, b: np.ndarray, n_projections: int, rng: np.random.Generator) -> float:
    """Sliced 1-Wasserstein distance between two equal-size 2-D samples (random directions)."""
    if a.shape != b.shape:
        raise ValueError(f"samples must have the same shape, got {a.shape} and {b.shape}")
    th = rng.uniform(0, math.pi, size=n_projections)
    D = np.stack([np.cos(th), np.sin(th)], 0)  # (2, P)
    pa, pb = np.sort(a @ D, axis=0), np.sort(b @ D, axis=0)
    return float(np.mean(np.abs(pa - pb)))


def is_monotone_decreasing(values: Sequence[float]) -> bool:
    """True when every value is strictly below the previous one (and all are finite)."""
    v = np.asarray(list(values), dtype=float)
    return bool(v.size >= 2 and np.all(np.isfinite(v)) and np.all(np.diff(v) < 0))


def classify_monotone(ms: Sequence[int], values: Sequence[float]) -> str:
    """Verdict status for a distance sequence over increasing ``ms``."""
    v = np.asarray(list(values), dtype=float)
    if is_monotone_decreasing(v):
        return "verified"
    if v.size >= 2 and np.all(np.isfinite(v)):
        j = 0
        while j + 1 < v.size and v[j + 1] < v[j]:
            j += 1
        if j >= 1:
            return f"holds in regime m <= {int(list(ms)[j])} (the distance decreases up to there, then stops decreasing)"
    return "refuted"


# ------------------------------------------------------------------------------ figures
def _figures(out_dir: Path, opts: dict[str, Any], fields: list[BoxMixture], rows: list[dict[str, Any]],
             floor: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    L = float(opts["half_extent"]) + 0.3
    h = 64  # quadrant resolution; the densities are mirrored (symmetric under x -> -x, y -> -y)
    cq = (np.arange(h) + 0.5) * (L / h)
    c = np.concatenate([-cq[::-1], cq])
    X, Y = np.meshgrid(cq, cq, indexing="xy")
    P = np.stack([X.ravel(), Y.ravel()], -1)

    def mirror(q: np.ndarray) -> np.ndarray:
        q = q.reshape(h, h)  # [y, x], both > 0
        top = np.concatenate([q[:, ::-1], q], axis=1)
        return np.concatenate([top[::-1, :], top], axis=0)

    panels = [("target", mirror(target_density(P, opts)))]
    for f, r in zip(fields, rows):
        with torch.no_grad():
            d = mirror(f.log_prob(torch.as_tensor(P, dtype=DT), 1.0).exp().numpy())
        panels.append((f"m = {r['m']} (sigma {r['sigma']:.3g})\nL1 = {r['l1']:.3f}", d))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.9))
    vmax = float(panels[0][1].max())
    for ax, (title, d) in zip(np.atleast_1d(axes), panels):
        ax.pcolormesh(c, c, d, shading="auto", cmap="magma", vmin=0, vmax=vmax)
        ax.set(title=title, aspect="equal", xticks=[], yticks=[])
    figs.append(savefig(fig, out_dir, "thm42_densities.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ms = [r["m"] for r in rows]
    ax.plot(ms, [r["l1"] for r in rows], "o-", label="L1 = int |p_m - p| (exact log_prob)")
    ax.plot(ms, [r["lp_upper_bound"] for r in rows], "s--", label="LP upper bound = L1 / 2")
    ax.plot(ms, [r["sliced_w1"] for r in rows], "^-", label="sliced W1 (samples)")
    ax.axhline(floor, color="gray", ls=":", label="sliced W1 sampling floor")
    ax.set(xscale="log", yscale="log", xlabel="m (number of boxes)", ylabel="distance",
           title=f"Thm. 4.2: {opts['target']} target")
    ax.legend(fontsize=8)
    figs.append(savefig(fig, out_dir, "thm42_distances.png"))
    return figs


# ------------------------------------------------------------------------------ run
def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Theorem 4.2 approximation study; see the module docstring for the options and outputs."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = _options(FULL if full else FAST, overrides)
    rng = np.random.default_rng(seed)
    ns = int(opts["n_samples"])
    target_a = sample_target(ns, opts, rng)
    target_b = sample_target(ns, opts, rng)
    floor = sliced_w1(target_a, target_b, int(opts["n_projections"]), np.random.default_rng(seed + 1))
    L = float(opts["half_extent"])
    rows: list[dict[str, Any]] = []
    fields: list[BoxMixture] = []
    mass_in_square = None
    for m in opts["ms"]:
        t = time.perf_counter()
        field, info = box_mixture_approximant(int(m), opts)
        mass_in_square = info.pop("mass_in_square")
        lim = L + 5 * info["sigma"]
        half = int(math.ceil(lim / float(opts["eval_spacing"])))
        he = lim / half
        # the target and the tiling are symmetric under x -> -x and y -> -y, so the integrals over
        # the plane are 4 x those over the quadrant x, y > 0 (the grid is symmetric, no cell on an axis)
        c = (np.arange(half) + 0.5) * he
        X, Y = np.meshgrid(c, c, indexing="xy")
        P = np.stack([X.ravel(), Y.ravel()], -1)
        with torch.no_grad():
            pm = field.log_prob(torch.as_tensor(P, dtype=DT), 1.0).exp().numpy()
        pt = target_density(P, opts)
        w4 = 4.0 * he * he
        l1 = float(np.abs(pm - pt).sum() * w4)
        n = 2 * half
        gen = torch.Generator().manual_seed(int(seed) * 1000 + int(m))
        xs = field.sample(ns, generator=gen).numpy()
        sw = sliced_w1(xs, target_a, int(opts["n_projections"]), np.random.default_rng(seed + 1))
        rows.append(info | {"l1": l1, "lp_upper_bound": 0.5 * l1, "mass_mixture": float(pm.sum() * w4),
                            "mass_target": float(pt.sum() * w4), "sliced_w1": sw, "eval_points": int(n * n),
                            "seconds": time.perf_counter() - t})
        fields.append(field)
    ms = [r["m"] for r in rows]
    l1s = [r["l1"] for r in rows]
    sws = [r["sliced_w1"] for r in rows]
    status = classify_monotone(ms, l1s)
    key = "L1 = " + ", ".join(f"{v:.3f}" for v in l1s) + f" for m = {', '.join(str(m) for m in ms)}"
    tgt = (f"Gaussian ring (R = {opts['radius']:g}, radial width {opts['width']:g})" if opts["target"] == "ring"
           else f"uniform annulus (R = {opts['radius']:g} +- {opts['annulus_half_width']:g})")
    evidence = (
        f"Target: {tgt}. Approximants: k x k box tilings of [-{L:g}, {L:g}]^2 with target-mass weights and "
        f"sigma = {opts['sigma_factor']:g} x side; L1 distance with the field's exact log_prob on a grid of spacing "
        f"<= {opts['eval_spacing']:g}. L1 {'decreases strictly' if is_monotone_decreasing(l1s) else 'does not decrease strictly'}: "
        + "; ".join(f"m={r['m']} (effective {r['m_effective']}, sigma {r['sigma']:.3g}): L1 {r['l1']:.4f}, "
                    f"LP <= {r['lp_upper_bound']:.4f}, sliced W1 {r['sliced_w1']:.4f}" for r in rows)
        + f". L1 ratio last/first {l1s[-1] / l1s[0]:.3f}. Sliced W1 (from {ns} samples; sampling floor {floor:.4f}) "
        + ("decreases strictly too." if is_monotone_decreasing(sws) else "does not decrease strictly (sampling noise near the floor).")
    )
    verdict = Verdict(status, key, evidence)
    figures = _figures(out_dir, opts, fields, rows, floor)
    params = {"full": full, "seed": seed, **opts}
    numbers = {
        "target": {"kind": opts["target"], "radius": opts["radius"],
                   **({"width": opts["width"]} if opts["target"] == "ring" else {"annulus_half_width": opts["annulus_half_width"]}),
                   "mass_in_square": mass_in_square},
        "rows": rows,
        "l1": l1s,
        "sliced_w1": sws,
        "sliced_w1_noise_floor": floor,
        "l1_monotone": is_monotone_decreasing(l1s),
        "sliced_w1_monotone": is_monotone_decreasing(sws),
        "l1_ratio_last_first": l1s[-1] / l1s[0],
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), verdict, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
