"""Figure of the Lemma D.1 experiment (docs/theory.md §6.1): ``lemma_d1.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulate.experiments.common import savefig
from theory.figures import readable_log_ticks

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, opts: Any, units: list[dict[str, Any]]) -> list[str]:
    """``lemma_d1.png``: mean ``log Lambda_G`` by method vs ``n``; max |difference| per pair vs ``n`` with ``tol``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    #: Lemma D.1's three routes to log Lambda_G, in words (docs/theory.md §6.1)
    words = {"density_ratio": "density ratio log phi(z) - log p_g(G(z))",
             "divergence": "divergence integral along the path",
             "slogdet": "log |det J_G| of the full Jacobian"}
    short = {"density_ratio": "density ratio", "divergence": "divergence integral", "slogdet": "slogdet of J_G"}
    tol = opts.tol
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.4))
    markers = {"density_ratio": "o", "divergence": "x", "slogdet": "s"}
    fields = sorted({u["field"] for u in units})
    for f_index, kind in enumerate(fields):
        us = sorted((u for u in units if u["field"] == kind), key=lambda u: u["n"])
        for method, mk in markers.items():
            pts = [(u["n"], u["mean_log_Lambda"][method]) for u in us if method in u["mean_log_Lambda"]]
            if pts:
                axes[0].plot(*zip(*pts), marker=mk, ls="-" if method == "density_ratio" else "none", color=f"C{f_index}",
                             label=f"{kind} field: {words.get(method, method)}", mfc="none", ms=7)
        for p_index, pair in enumerate(sorted({p for u in us for p in u["max_diff"]})):
            pts = [(u["n"], max(u["max_diff"][pair], 1e-17)) for u in us if pair in u["max_diff"]]
            a_, _, b_ = pair.partition("-")
            label = f"{kind} field: {short.get(a_, a_)} vs {short.get(b_, b_)}"
            axes[1].plot(*zip(*pts), marker="os^dv"[p_index % 5], color=f"C{f_index}", label=label)
    axes[1].axhline(tol, color="k", ls="--", label=f"tolerance {tol:.0e}")
    axes[0].set(xscale="log", xlabel="dimension n", ylabel="mean log Lambda_G(z)",
                title="Lemma D.1: log Lambda_G = log |det J_G| three ways")
    axes[1].set(xscale="log", yscale="log", xlabel="dimension n", ylabel="largest |difference| of log Lambda_G",
                title="agreement between the methods")
    for ax in axes:
        readable_log_ticks(ax.xaxis)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return [savefig(fig, out_dir, "lemma_d1.png")]
