"""Figure of the Theorem 3.1 experiment (docs/theory.md §5.1): ``thm31.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from simulate.experiments.common import savefig

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, summaries: dict[str, dict[str, Any]]) -> list[str]:
    """``thm31.png``: measured errors and the bounds' medians vs ``N`` (log-log), one panel per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(1, len(summaries))
    fig, axes = plt.subplots(1, k, figsize=(5.5 * k, 4.2), squeeze=False)
    for ax, (kind, s) in zip(axes[0], summaries.items()):
        Ns = sorted(int(N) for N in s["by_N"])
        d = [s["by_N"][str(N)] for N in Ns]
        ax.plot(Ns, [r["noise_error_median"] for r in d], "o-", color="C0", label="||z~ - z|| (median)")
        ax.plot(Ns, [r["noise_error_max"] for r in d], "o:", color="C0", alpha=0.6, label="||z~ - z|| (max)")
        ax.plot(Ns, [r["recon_error_median"] for r in d], "s-", color="C1", label="||G(z~) - x|| (median)")
        ax.plot(Ns, [r["recon_error_max"] for r in d], "s:", color="C1", alpha=0.6, label="||G(z~) - x|| (max)")
        for b, st, c in (("log_noise_error", "--", "C0"), ("log_reconstruction_error", "--", "C1"), ("log_gronwall_error", "-.", "C3")):
            vals = [math.exp(min(r["median_log_bounds"][b], 700.0)) for r in d]
            ax.plot(Ns, vals, st, color=c, label=f"bound {b[4:]} (median)")
        ref = d[0]["noise_error_median"] * Ns[0] / np.array(Ns, dtype=float)
        ax.plot(Ns, ref, "k:", lw=0.8, label="slope -1")
        ax.set(xscale="log", yscale="log", xlabel="Euler steps N", ylabel="error", title=f"Theorem 3.1: {kind}")
        ax.legend(fontsize=6)
    return [savefig(fig, out_dir, "thm31.png")]
