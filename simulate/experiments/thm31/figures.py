"""Figure of the Theorem 3.1 experiment (docs/theory.md §5.1): ``thm31.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from simulate.experiments.common import savefig
from theory.figures import readable_log_ticks

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, summaries: dict[str, dict[str, Any]]) -> list[str]:
    """``thm31.png``: measured errors and the bounds' medians vs ``N`` (log-log), one panel per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    #: the bounds of Theorem 3.1 in words (docs/theory.md §5.1)
    bound_names = {"log_noise_error": "bound on the noise error (part 1)",
                   "log_reconstruction_error": "bound on the reconstruction error (part 2)",
                   "log_gronwall_error": "Gronwall bound (hM/2L) e^L (e^L - 1)"}
    k = max(1, len(summaries))
    # one legend for all panels (the same entries), in a column of its own right of the data
    fig, axes = plt.subplots(1, k + 1, figsize=(5.2 * k + 4.0, 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1.0] * k + [0.9]})
    for ax, (kind, s) in zip(axes[0][:k], summaries.items()):
        Ns = sorted(int(N) for N in s["by_N"])
        d = [s["by_N"][str(N)] for N in Ns]
        ax.plot(Ns, [r["noise_error_median"] for r in d], "o-", color="C0", label="noise error ||z~ - z||, median")
        ax.plot(Ns, [r["noise_error_max"] for r in d], "o:", color="C0", alpha=0.6, label="noise error, max")
        ax.plot(Ns, [r["recon_error_median"] for r in d], "s-", color="C1", label="reconstruction error ||G(z~) - x||, median")
        ax.plot(Ns, [r["recon_error_max"] for r in d], "s:", color="C1", alpha=0.6, label="reconstruction error, max")
        for b, st, c in (("log_noise_error", "--", "C0"), ("log_reconstruction_error", "--", "C1"), ("log_gronwall_error", "-.", "C3")):
            vals = [math.exp(min(r["median_log_bounds"][b], 700.0)) for r in d]
            ax.plot(Ns, vals, st, color=c, label=f"{bound_names[b]}, median")
        ref = d[0]["noise_error_median"] * Ns[0] / np.array(Ns, dtype=float)
        ax.plot(Ns, ref, "k:", lw=0.8, label="slope -1 (first-order scheme)")
        ax.set(xscale="log", yscale="log", xlabel="Euler steps N", ylabel="error (Euclidean norm)",
               title=f"Theorem 3.1 on the {kind} field")
        readable_log_ticks(ax.xaxis)
    legend_ax = axes[0][k]
    legend_ax.set_axis_off()
    legend_ax.legend(*axes[0][0].get_legend_handles_labels(), loc="center", fontsize=8, frameon=False)
    return [savefig(fig, out_dir, "thm31.png")]
