"""Figure of the Lemma D.1 experiment (docs/theory.md §6.1): ``lemma_d1.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulate.experiments.common import savefig

__all__ = ["draw_figures"]


def draw_figures(out_dir: Path, opts: Any, units: list[dict[str, Any]]) -> list[str]:
    """``lemma_d1.png``: mean ``log Lambda_G`` by method vs ``n``; max |difference| per pair vs ``n`` with ``tol``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tol = opts.tol
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    markers = {"density_ratio": "o", "divergence": "x", "slogdet": "s"}
    fields = sorted({u["field"] for u in units})
    for kind in fields:
        us = sorted((u for u in units if u["field"] == kind), key=lambda u: u["n"])
        for method, mk in markers.items():
            pts = [(u["n"], u["mean_log_Lambda"][method]) for u in us if method in u["mean_log_Lambda"]]
            if pts:
                axes[0].plot(*zip(*pts), marker=mk, ls="-" if method == "density_ratio" else "none",
                             label=f"{kind}: {method}", mfc="none", ms=7)
        for pair in sorted({p for u in us for p in u["max_diff"]}):
            pts = [(u["n"], max(u["max_diff"][pair], 1e-17)) for u in us if pair in u["max_diff"]]
            axes[1].plot(*zip(*pts), marker="o", label=f"{kind}: {pair}")
    axes[1].axhline(tol, color="k", ls="--", label=f"tol {tol:.0e}")
    axes[0].set(xscale="log", xlabel="n", ylabel="mean log Lambda_G(z)", title="log Lambda_G by three methods")
    axes[1].set(xscale="log", yscale="log", xlabel="n", ylabel="max |diff log Lambda|", title="agreement between methods")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    return [savefig(fig, out_dir, "lemma_d1.png")]
