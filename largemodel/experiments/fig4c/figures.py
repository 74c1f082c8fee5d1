"""Figure of the Fig. 4(c) experiment's Theorem 4.1 / 4.3 part (docs/theory.md §6.3, §8): ``trend_theorem43.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from theory.figures import save_png

__all__ = ["TREND_FIGURE", "draw_figures"]

#: the trend figure's file name (in the experiment's folder)
TREND_FIGURE = "trend_theorem43.png"


def draw_figures(out_dir: Path, trend: list[dict[str, Any]]) -> list[str]:
    """``trend_theorem43.png``: ``P_inst(1)``, ``p1``, ``p2`` (``c = 1.1 n``), the median ``||F(x)||^2 / n``
    and the median ``log Lambda_G`` against the dimension ``n`` of the trained models. Returns the file
    names (relative to ``out_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in trend]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for key, label in (("P_inst", "P_inst(tau = 1)"), ("p1", "p1 (c = 1.1 n)"), ("p2", "p2 (c = 1.1 n)")):
        axes[0].plot(ns, [r[key] for r in trend], "o-", label=label)
    axes[0].set(xscale="log", xlabel="dimension n (pixels x channels)", ylabel="fraction of held-out images",
                ylim=(-0.05, 1.05), title="Theorem 4.1's probabilities")
    axes[1].plot(ns, [r["median_z2_over_n"] for r in trend], "o-", label="median ||F(x)||^2 / n")
    axes[1].plot(ns, [r["median_log_Lambda"] for r in trend], "s-", label="median log Lambda_G")
    axes[1].axhline(1.0, color="gray", lw=0.8, ls="--")
    axes[1].axhline(0.0, color="gray", lw=0.8)
    axes[1].set(xscale="log", xlabel="dimension n (pixels x channels)", ylabel="value (no unit)",
                title="what decides them")
    for ax in axes:
        # the measured dimensions themselves as ticks (64, 256, ...), plain numbers
        ax.set_xticks(ns, [f"{n:g}" for n in ns])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.legend(fontsize=9, loc="best")
    fig.suptitle("Theorem 4.1 / 4.3 quantities on models trained here, by resolution", fontsize=11)
    save_png(fig, Path(out_dir) / TREND_FIGURE, dpi=120)
    return [TREND_FIGURE]
