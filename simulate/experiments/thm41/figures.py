"""Figure of the Theorem 4.1 experiment (docs/theory.md §6.3): ``thm41.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simulate.experiments.common import savefig

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, opts: Any, cases: list[dict[str, Any]]) -> list[str]:
    """``thm41.png``: ``P_inst`` and the bound ``1 - p1 - p2`` vs ``tau`` with 95% intervals, per field and ``n``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields, dims = list(opts.fields), list(opts.dims)

    fig, axes = plt.subplots(len(fields), len(dims), figsize=(4.2 * len(dims), 3.4 * len(fields)), squeeze=False)
    for i, kind in enumerate(fields):
        for j, n in enumerate(dims):
            ax = axes[i][j]
            sel = [c for c in cases if c["field"] == kind and c["n"] == n]
            eps_list = sorted({c["eps"] for c in sel})
            for k, eps in enumerate(eps_list):
                cs = sorted((c for c in sel if c["eps"] == eps), key=lambda c: c["tau"])
                taus = np.array([c["tau"] for c in cs])
                if k == 0:
                    p = np.array([c["p_inst"]["estimate"] for c in cs])
                    lo = p - np.array([c["p_inst"]["lower"] for c in cs])
                    hi = np.array([c["p_inst"]["upper"] for c in cs]) - p
                    ax.errorbar(taus, p, yerr=[lo, hi], fmt="o-", color="k", capsize=3, label="P_inst (95% CP)")
                b = np.array([c["lower_bound"] for c in cs])
                blo = b - np.array([c["lower_bound_interval"][0] for c in cs])
                bhi = np.array([c["lower_bound_interval"][1] for c in cs]) - b
                ax.errorbar(taus * (1.03 + 0.03 * k), b, yerr=[np.maximum(blo, 0), np.maximum(bhi, 0)], fmt="s--",
                            color=f"C{k}", capsize=3, label=f"1 - p1 - p2, c=(1+{eps:g})n")
            ax.set(xscale="log", ylim=(-1.05, 1.05), xlabel="tau", title=f"{kind}, n={n}")
            all_taus = sorted({c["tau"] for c in sel})
            ax.set_xticks(all_taus)
            ax.set_xticklabels([f"{t:g}" for t in all_taus], fontsize=7)
            ax.minorticks_off()
            ax.axhline(0, color="gray", lw=0.6)
            if j == 0:
                ax.set_ylabel("probability")
            ax.legend(fontsize=6)
    return [savefig(fig, out_dir, "thm41.png")]
