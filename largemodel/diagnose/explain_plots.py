r"""Figures of ``pfode largemodel explain``.

* :func:`decomposition_figure`: images ranked by reconstruction error; per image a stacked bar
  of ``log10 D + log10 A = log10 e`` (discrepancy, then amplification on top; the identity
  ``e = A D`` of ``largemodel.diagnose.explain``), the error itself as a dot, and below it the pixel MSE
  split into the VAE part ``||D(E(x)) - x||^2`` and the rest (the ODE part);
* :func:`nfe_figure`: reconstruction error against network evaluations for each inverter
  (median over images with the interquartile band).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from largemodel.diagnose.explain import INVERTERS
from largemodel.study.plots import _new_figure, _save

__all__ = ["decomposition_figure", "nfe_figure"]


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([r.get(key) if r.get(key) is not None else np.nan for r in rows], dtype=float)


def decomposition_figure(rows: Sequence[Mapping[str, Any]], out_png: str | Path, *, top: int = 40) -> Path:
    """Stacked log-decomposition of the ``top`` worst reconstructions, ranked by error."""
    if not rows:
        raise ValueError("no records to plot")
    order = np.argsort(-_values(rows, "error_latent"))[:top]
    ranked = [rows[i] for i in order]
    e, a, d = (_values(ranked, k) for k in ("error_latent", "amplification", "discrepancy"))
    vae, total = _values(ranked, "vae_mse_pixel"), _values(ranked, "mse_pixel")
    idx = np.arange(len(ranked))
    fig = _new_figure((max(6.0, 0.22 * len(ranked) + 2.5), 5.6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    ld, la = np.log10(d), np.log10(a)
    ax1.bar(idx, ld, width=0.8, color="tab:blue", label="log10 discrepancy ||z~ - z*||")
    # the amplification segment goes from log10 D to log10 D + log10 A (down when A < 1): narrower, on top
    ax1.bar(idx, la, bottom=ld, width=0.4, color="tab:orange", zorder=3, label="log10 amplification (from D)")
    ax1.plot(idx, np.log10(e), "k_", ms=12, zorder=4, label="log10 error ||G(z~) - y|| (= sum)")
    ax1.axhline(0.0, color="gray", lw=0.7)
    ax1.set_ylabel("log10 (latent)")
    ax1.legend(fontsize=7, loc="best")
    res = ranked[0].get("resolution")
    ax1.set_title(f"reconstruction error = amplification x discrepancy, images ranked by error ({res}px)", fontsize=9)
    ax2.bar(idx, vae, color="tab:green", label="VAE part (pixel MSE of D(E(x)))")
    ax2.bar(idx, np.clip(total - vae, 0, None), bottom=vae, color="tab:red", label="ODE part (rest of the pixel MSE)")
    ax2.set_ylabel("pixel MSE [0,1]")
    ax2.set_xlabel("image rank (worst first)")
    ax2.legend(fontsize=7, loc="best")
    return _save(fig, out_png, 120)


def nfe_figure(rows: Sequence[Mapping[str, Any]], out_png: str | Path) -> Path:
    """Median reconstruction error (latent) against NFE per inverter, with the interquartile band."""
    fig = _new_figure((5.4, 3.8))
    ax = fig.subplots()
    for name in INVERTERS:
        per = [r["inverters"][name] for r in rows if name in r.get("inverters", {})]
        if not per:
            continue
        nfe = np.median(np.array([p["nfe"] for p in per], dtype=float), axis=0)
        err = np.array([p["error"] for p in per], dtype=float)
        q1, med, q3 = np.nanpercentile(err, [25, 50, 75], axis=0)
        ax.plot(nfe, med, "o-", label=name.replace("_", " "))
        ax.fill_between(nfe, q1, q3, alpha=0.2)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations of the inversion",
           ylabel="||G_N(z) - y|| (median, IQR)")
    ax.set_title("inverters at equal model evaluations", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, out_png, 120)
