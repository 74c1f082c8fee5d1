r"""Figures of ``pfode largemodel explain`` (labels in words, legends outside the data).

* :func:`decomposition_figure`: per image, the reconstruction error against the discrepancy and
  against the amplification (log-log; ``e = A D``, docs/theory.md §5.3), each panel titled with its
  Pearson correlation; a third panel with the pixel MSE's VAE share only for models with a VAE;
* :func:`nfe_figure`: median error ``||G_N(z) - y||`` and distance ``||z - z*||`` against network
  evaluations for each inverter (interquartile band), ``G_N``'s discretisation floor
  ``||G_N(F(y)) - y||`` (and ``||F(y) - z*||``) as a dashed line, the exact inversion as a star at the
  NFE it spends;
* :func:`controls_figure`: the decomposition's discrepancy share and Spearman(``mu_bar``, error) with
  their intervals on the trained model and on the synthetic controls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from largemodel.diagnose.explain import INVERTERS
from largemodel.study.plots import _new_figure, _save

__all__ = ["decomposition_figure", "nfe_figure", "controls_figure"]

_WORDS = {"euler": "Euler", "heun": "Heun", "midpoint_reuse": "midpoint with reuse (FireFlow)",
          "fixed_point": "fixed point, capped"}


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([r.get(key) if r.get(key) is not None else np.nan for r in rows], dtype=float)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[keep], y[keep])[0, 1]) if keep.sum() >= 3 else float("nan")


def decomposition_figure(rows: Sequence[Mapping[str, Any]], out_png: str | Path) -> Path:
    """Error against discrepancy and against amplification, one point per image (log10 axes)."""
    if not rows:
        raise ValueError("no records to plot")
    e, a, d = (np.log10(_values(rows, k)) for k in ("error_latent", "amplification", "discrepancy"))
    vae = _values(rows, "vae_mse_pixel")
    has_vae = bool(np.nanmax(np.nan_to_num(vae, nan=0.0)) > 0)
    fig = _new_figure((9.6 if has_vae else 7.2, 3.4))
    axes = fig.subplots(1, 3 if has_vae else 2)
    res = rows[0].get("resolution")
    for ax, x, word in ((axes[0], d, "discrepancy ||z~ - z*||"), (axes[1], a, "amplification ||G(z~) - G(z*)|| / D")):
        ax.plot(x, e, "o", ms=4, color="tab:blue", alpha=0.8)
        ax.set_xlabel(f"log10 {word}", fontsize=9)
        ax.set_title(f"Pearson r = {_pearson(x, e):.2f}, spread of x: sd {np.nanstd(x, ddof=1):.2f}", fontsize=9)
    axes[0].set_ylabel(f"log10 reconstruction error ||G(z~) - y||\n({len(rows)} images, {res} px)", fontsize=9)
    if has_vae:
        total = _values(rows, "mse_pixel")
        axes[2].hist(np.clip(vae / total, 0.0, 1.0), bins=12, color="tab:green")
        axes[2].set_xlabel("VAE share of the pixel MSE", fontsize=9)
        axes[2].set_ylabel("images", fontsize=9)
    fig.suptitle("error = amplification x discrepancy: which factor varies with the error", fontsize=10)
    return _save(fig, out_png, 120)


def nfe_figure(rows: Sequence[Mapping[str, Any]], out_png: str | Path) -> Path:
    """Median error and distance to ``z*`` against NFE per inverter, with the floor and the exact inversion."""
    fig = _new_figure((9.0, 4.0))
    axes = fig.subplots(1, 2)
    for ax, key, floor_key, ylabel in ((axes[0], "error", "floor_error", "error against y: ||G_N(z) - y||"),
                                       (axes[1], "distance", "floor_distance", "distance to the inverse: ||z - z*||")):
        for i, name in enumerate(INVERTERS):
            per = [r["inverters"][name] for r in rows if name in r.get("inverters", {})]
            if not per or not all(key in p for p in per):
                continue
            nfe = np.median(np.array([p["nfe"] for p in per], dtype=float), axis=0)
            q1, med, q3 = np.nanpercentile(np.array([p[key] for p in per], dtype=float), [25, 50, 75], axis=0)
            ok = med > 0
            ax.plot(nfe[ok], med[ok], "o-", color=f"C{i}", label=_WORDS[name])
            ax.fill_between(nfe[ok], q1[ok], q3[ok], color=f"C{i}", alpha=0.15)
        vals = _values(rows, floor_key)
        floor = float(np.nanmedian(vals)) if np.isfinite(vals).any() else float("nan")
        if np.isfinite(floor) and floor > 0:
            ax.axhline(floor, color="k", ls="--", lw=1, label="G_N's floor: z = F(y), F by an adaptive solve")
        ex = [r["inverters"]["exact"] for r in rows if "exact" in r.get("inverters", {})]
        if key == "error" and ex:
            x_ex = float(np.median([p["nfe"][0] for p in ex]))
            y_ex = float(np.median([p["error"][0] for p in ex]))
            ax.plot([x_ex], [y_ex], "*", ms=12, color="k", label="exact inversion (its tolerance)")
        ax.set(xscale="log", yscale="log")
        ax.set_xlabel("network evaluations of the inversion", fontsize=9)
        ax.set_ylabel(ylabel + " (median)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("inverters at equal model evaluations (band: interquartile range over images)", fontsize=10)
    return _save(fig, out_png, 120)


def controls_figure(summaries: Mapping[str, Mapping[str, Any]], out_png: str | Path, *, share_level: float,
                    rho_level: float) -> Path:
    """Discrepancy share and Spearman(``mu_bar``, error) with 95% intervals, one row per field."""
    names = list(summaries)
    fig = _new_figure((8.4, 0.5 * len(names) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(names))[::-1]
    for ax, title in ((axes[0], "share of var(log error) going with the discrepancy"),
                      (axes[1], "Spearman(mu_bar, reconstruction error)")):
        for yi, name in zip(y, names):
            s = summaries[name]
            if ax is axes[0]:
                v, (lo, hi) = s["share_discrepancy"]["value"], s["share_discrepancy"]["ci"]
            else:
                c = s.get("spearman_mu_bar_error", {})
                v, (lo, hi) = c.get("spearman_rho", np.nan), c.get("spearman_ci", (np.nan, np.nan))
            ax.errorbar([v], [yi], xerr=[[v - lo], [hi - v]], fmt="o", color="tab:blue", capsize=3)
        ax.axvline(0.0, color="gray", lw=0.7)
        ax.set_title(title, fontsize=9)
    axes[0].axvline(share_level, color="k", ls="--", lw=0.8)
    axes[1].axvline(rho_level, color="k", ls="--", lw=0.8)
    axes[0].set_yticks(y, names, fontsize=9)
    fig.suptitle("trained model against synthetic controls (95% intervals; dashed: the judges' levels)", fontsize=10)
    return _save(fig, out_png, 120)
