r"""Figures of the Fig. 4(a, b) experiment.

* ``fig4a_density.png``: ``p_g`` (the field's exact ``log_prob(x, 1)``) and the data box;
* ``fig4b_scatter.png``: per pipeline (one column), log-log error against ``mu_bar`` on the top row
  (its y range the pipeline's own errors), the amplification ``e / ||z~ - z_ref||`` against
  ``mu_bar`` in the middle, and the exact-inversion errors (round-off, ~1e-15) on a row of their own
  (docs/theory.md §5.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulate.experiments.common import savefig
from simulate.experiments.fig3.measure import DT
from simulate.experiments.fig4.options import Fig4Options
from theory.figures import readable_log_ticks

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, opts: Fig4Options, field: Any, box: np.ndarray, x: np.ndarray,
                 summaries: dict[str, Any], points: dict[str, Any]) -> list[str]:
    """Draw both figures; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    figs = []
    n = int(opts.density_n)
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
    exact = any(points[name]["exact_inversion_error"] is not None for name in names)
    rows = 3 if exact else 2
    fig, axes = plt.subplots(rows, len(names), figsize=(6.2 * len(names), 4.4 * rows), squeeze=False)
    for j, name in enumerate(names):
        s, p = summaries[name], points[name]
        c = s["correlation"]
        ax = axes[0, j]
        ax.scatter(p["mu_bar"], p["error"], s=6, alpha=0.6)
        rho, ci = c["spearman_rho"], c["spearman_ci"]
        ci_txt = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None and ci[1] is not None else "[n/a]"
        # the y range is the pipeline's own errors (the exact-inversion errors, ~1e-15, get their own row)
        ax.set(xscale="log", yscale="log", xlabel="averaged instability coefficient mu_bar(z~)",
               ylabel="reconstruction error ||x^ - x||",
               title=f"{s['inv_solver']} inversion + {s['gen_solver']} regeneration, N = {s['steps']} steps\n"
                     f"Spearman {rho:.2f} {ci_txt}, Pearson of logs {c['pearson_r']:.2f}\n{len(p['error'])} points")
        readable_log_ticks(ax.yaxis)
        ax = axes[1, j]
        amp = p["error"] / np.maximum(p["disc_ref"], 1e-300)
        ax.scatter(p["mu_bar"], amp, s=6, alpha=0.6, c="C2")
        lim = [np.min(p["mu_bar"]), np.max(p["mu_bar"])]
        ax.plot(lim, lim, "k--", lw=0.8, label="amplification = mu_bar")
        d = s["decomposition"]
        ax.set(xscale="log", yscale="log", xlabel="averaged instability coefficient mu_bar(z~)",
               ylabel="error / inversion discrepancy ||z~ - z_ref||",
               title=f"amplification, z_ref = {d['reference']}\nR^2 of the log error on: "
                     f"discrepancy {d['r2_disc']:.2f}, mu_bar {d['r2_mu_bar']:.2f}, both {d['r2_both']:.2f}")
        ax.legend(fontsize=8, loc="best")
        if exact:
            ax = axes[2, j]
            if p["exact_inversion_error"] is None:
                ax.set_axis_off()
                continue
            ax.scatter(p["mu_bar"], np.maximum(p["exact_inversion_error"], 1e-17), s=6, marker="x", c="C3", alpha=0.6)
            ax.set(xscale="log", yscale="log", xlabel="averaged instability coefficient mu_bar(z~)",
                   ylabel="reconstruction error ||x^ - x||",
                   title=f"exact (fixed-point) inversion\nof the same {s['gen_solver']} scheme, N = {s['steps']} steps")
    figs.append(savefig(fig, out_dir, "fig4b_scatter.png"))
    return figs
