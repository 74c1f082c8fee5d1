r"""Figures of the Fig. 3 experiment.

* ``fig3a_density.png``: ``p_g`` (the field's exact ``log_prob(x, 1)``), the green square and its image (red);
* ``fig3b_lambda_x.png``: ``log10 lambda_x`` on the grid (central differences, and the paper's
  grid-neighbour estimator beside it), the ``lambda_x = 1`` contour, the green square, the dashed line;
* ``fig3c_line.png``: ``||J_G||_2``, ``lambda_x``, ``lambda_y`` and ``mu_G(z, s e_x)`` along the dashed line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulate.experiments.common import savefig
from simulate.experiments.fig3.measure import DT
from simulate.experiments.fig3.options import Fig3Options

__all__ = ["draw_figures"]


def _density(field: Any, opts: Fig3Options, box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(opts.density_n)
    xs = torch.linspace(box[0], box[1], n, dtype=DT)
    ys = torch.linspace(box[2], box[3], n, dtype=DT)
    P = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = field.log_prob(P, 1.0).reshape(n, n)
    return xs.numpy(), ys.numpy(), lp.exp().numpy()


def draw_figures(out_dir: Path, opts: Fig3Options, field: Any, expansion: dict[str, Any], lmap: dict[str, Any],
                 line: dict[str, Any]) -> list[str]:
    """Draw the three figures from the ``expansion``, ``lambda_map`` and ``line`` units; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    bnd, green_img = expansion["boundary"], expansion["green_image"]
    means = np.asarray(opts.means, dtype=float).reshape(-1, 2)
    stds = float(np.max(np.asarray(opts.stds, dtype=float)))
    lo = np.minimum(means.min(0) - 4 * stds, bnd["x"].min(0)) - 0.3
    hi = np.maximum(means.max(0) + 4 * stds, bnd["x"].max(0)) + 0.3
    lo, hi = np.minimum(lo, -1.0), np.maximum(hi, 1.0)
    xs, ys, dens = _density(field, opts, (lo[0], hi[0], lo[1], hi[1]))
    c, a = opts.green_center, float(opts.green_half)
    figs = []

    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    im = ax.pcolormesh(xs, ys, dens, shading="auto", cmap="Blues")
    fig.colorbar(im, ax=ax, label="p_g(x)")
    ax.add_patch(Polygon(bnd["x"], closed=True, fc="red", ec="red", alpha=0.45, lw=1.0, label="G(green) (red)"))
    ax.scatter(green_img[:, 0], green_img[:, 1], s=2, c="darkred")
    ax.add_patch(Rectangle((c[0] - a, c[1] - a), 2 * a, 2 * a, fc="limegreen", ec="green", alpha=0.8, label="green region (noise)"))
    ax.set(xlabel="x", ylabel="y", title="Fig. 3(a): p_g, green square and its image G(green)", aspect="equal",
           xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]))
    ax.legend(loc="upper right", fontsize=8)
    figs.append(savefig(fig, out_dir, "fig3a_density.png"))

    g = lmap["g"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, lam, title in ((axes[0], lmap["lam_x"], f"central FD, h={opts.fd_step:g}"),
                           (axes[1], lmap["lam_grid"], f"grid neighbours, dz={lmap['spacing']:.3g}")):
        im = ax.pcolormesh(g, g, np.log10(np.maximum(lam, 1e-3)), shading="auto", cmap="viridis", vmin=-1.0, vmax=2.0)
        fig.colorbar(im, ax=ax, label="log10 lambda_x (clipped to [-1, 2])")
        if np.nanmax(lam) > 1 > np.nanmin(lam):
            ax.contour(g, g, lam, levels=[1.0], colors="white", linewidths=1.0)
        ax.add_patch(Rectangle((c[0] - a, c[1] - a), 2 * a, 2 * a, fc="none", ec="limegreen", lw=1.5))
        ax.axhline(float(opts.line_z2), color="w", ls="--", lw=1.0)
        ax.set(xlabel="z1", ylabel="z2", title=f"Fig. 3(b): lambda_x ({title})\nwhite: lambda_x = 1; green: green region", aspect="equal")
    figs.append(savefig(fig, out_dir, "fig3b_lambda_x.png"))

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    z1 = line["z1"]
    ax.plot(z1, line["spectral_norm"], "k-", lw=2.2, label="||J_G||_2 (Prop. 2.1 bound)")
    ax.plot(z1, line["lambda_x"], "C0-", label="lambda_G(z, e_x)")
    ax.plot(z1, line["lambda_y"], "C1-", label="lambda_G(z, e_y)")
    for i, (s, m) in enumerate(line["mu"].items()):
        ax.plot(z1, m, ls=":", color=f"C{i + 2}", label=f"mu_G(z, {s} e_x)")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set(yscale="log", xlabel="z1", ylabel="coefficient", title=f"Fig. 3(c): along z2 = {line['z2']:g}")
    ax.legend(fontsize=8)
    figs.append(savefig(fig, out_dir, "fig3c_line.png"))
    return figs
