"""Figure of the Proposition 2.1 experiment (docs/theory.md §2.4): ``prop21.png`` (the Fig. 3(c) idea)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simulate.experiments.common import savefig

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, units: dict[str, dict[str, Any]]) -> list[str]:
    """``prop21.png``: along ``z = (x, 0)`` the coefficients (left); ``|mu(s u) - lambda(u)|`` vs ``s`` (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    line = units.get("line_x", {}).get("curves", {})
    ax = axes[0]
    if line:
        x = line["x"]
        ax.plot(x, line["lambda_x"], lw=2, label="lambda along x-axis")
        ax.plot(x, line["lambda_y"], lw=2, label="lambda along y-axis")
        ax.plot(x, line["spectral_norm"], "k--", lw=1.5, label="||J_G||_2")
        for s, mu in line["mu_x"].items():
            ax.plot(x, mu, lw=1, alpha=0.8, label=f"mu along x, s={s}")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="x  (initial noise z = (x, 0))", ylabel="coefficient", title="Fig. 3(c): coefficients along z=(x,0)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, u in units.items():
        errs = np.array(u["errors"])
        sc = np.array(u["scales"])
        pick = np.unique(np.linspace(0, errs.shape[0] - 1, min(4, errs.shape[0])).astype(int))
        for i in pick:
            ax.plot(sc, np.maximum(errs[i], 1e-17), marker=".", lw=1, label=f"{name} #{i}")
    if units:
        sc = np.array(next(iter(units.values()))["scales"])
        ax.plot(sc, sc, "k:", lw=1, label="slope 1")
    ax.set(xscale="log", yscale="log", xlabel="s", ylabel="|mu(s u) - lambda(u)|", title="part (a): convergence as s -> 0")
    ax.legend(fontsize=6, ncol=2)
    return [savefig(fig, out_dir, "prop21.png")]
