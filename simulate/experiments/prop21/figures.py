"""Figure of the Proposition 2.1 experiment (docs/theory.md §2.4): ``prop21.png`` (coefficients along
a line of noises, as in the paper's Fig. 3(c) but on this experiment's mixture, and the convergence
of ``mu`` to ``lambda``)."""

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

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    line = units.get("line_x", {}).get("curves", {})
    ax = axes[0]
    if line:
        x = line["x"]
        ax.plot(x, line["lambda_x"], lw=2, color="C0", label="lambda_G along the x-axis")
        ax.plot(x, line["lambda_y"], lw=2, color="C1", label="lambda_G along the y-axis")
        ax.plot(x, line["spectral_norm"], "k--", lw=1.5, label="spectral norm ||J_G||_2")
        shades = plt.get_cmap("Greens")(np.linspace(0.45, 0.95, max(1, len(line["mu_x"]))))
        for shade, (s_, mu) in zip(shades, line["mu_x"].items()):
            ax.plot(x, mu, lw=1.1, color=shade, label=f"mu_G along x at perturbation size s = {s_}")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="x (initial noise z = (x, 0))", ylabel="coefficient (log scale)",
           title="Proposition 2.1 on the 2-D three-Gaussian mixture:\ncoefficients of G along z = (x, 0)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax = axes[1]
    for k, (name, u) in enumerate(units.items()):
        errs = np.maximum(np.array(u["errors"]), 1e-17)
        sc = np.array(u["scales"])
        lo, med, hi = np.quantile(errs, [0.1, 0.5, 0.9], axis=0)
        ax.fill_between(sc, lo, hi, color=f"C{k}", alpha=0.2, lw=0)
        ax.plot(sc, med, lw=1.8, color=f"C{k}", label=f"{name}: median of {errs.shape[0]} directions (band: 10-90%)")
    if units:
        sc = np.array(next(iter(units.values()))["scales"])
        ax.plot(sc, sc, "k:", lw=1.2, label="slope 1 (first order)")
    ax.set(xscale="log", yscale="log", xlabel="perturbation size s", ylabel="|mu(s u) - lambda(u)|",
           title="Proposition 2.1 (a): mu(s u) -> lambda(u) as s -> 0")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    return [savefig(fig, out_dir, "prop21.png")]
