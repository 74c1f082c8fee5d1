r"""Figures of the Theorem 4.2 experiment (docs/theory.md §7).

* ``thm42_densities.png``: the target and each approximant ``p_m`` (exact ``log_prob(x, 1)``);
* ``thm42_distances.png``: L1, its LP upper bound ``L1 / 2`` and sliced W1 against ``m`` (log-log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulate.fields import BoxMixture

from simulate.experiments.common import savefig
from simulate.experiments.thm42.options import Thm42Options
from simulate.experiments.thm42.targets import DT, target_density

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, opts: Thm42Options, fields: list[BoxMixture], rows: list[dict[str, Any]],
                 floor: float) -> list[str]:
    """Draw both figures; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    L = float(opts.half_extent) + 0.3
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
           title=f"Thm. 4.2: {opts.target} target")
    ax.legend(fontsize=8)
    figs.append(savefig(fig, out_dir, "thm42_distances.png"))
    return figs
