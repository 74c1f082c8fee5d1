"""Figure of the learned-vs-exact experiment (docs/theory.md §10.8): ``learned_vs_exact.png``.

Left: per point, learned against exact ``(1/n) log Lambda_G(F(x))`` (the net after the largest budget),
coloured by regime, the marker's size growing with ``n`` (one legend entry per regime and ``n``), circles at
``x ~ p_r``, crosses at held-out ``x ~ p_g``, the diagonal and ``log tau`` lines. Right: ``P_inst(tau)`` at ``x ~ p_r`` with its 95% Clopper-Pearson interval per regime, ``n`` and model
(exact, each budget, the control).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from theory.figures import save_png

__all__ = ["FIGURE", "draw_figures"]

FIGURE = "learned_vs_exact.png"
_COLOURS = {"sparse": "tab:red", "undetermined": "tab:orange", "single": "tab:blue"}


def draw_figures(out_dir: Path, opts: Any, numbers: dict[str, Any]) -> list[str]:
    """Draw :data:`FIGURE` into ``out_dir``; return the file names (relative to ``out_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    p = int(numbers["points"])
    big = f"learned@{max(opts.budgets)}"
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.4]})
    lo_hi = []
    sizes = {str(n): 8.0 + 14.0 * k for k, n in enumerate(opts.ns)}  # the marker grows with n
    for regime, by_n in numbers["log_Lambda"].items():
        for n, models in by_n.items():
            e, lrn = np.asarray(models["exact"]), np.asarray(models[big])
            lo_hi += [e.min(), e.max(), lrn.min(), lrn.max()]
            kw = {"color": _COLOURS.get(regime, "gray"), "alpha": 0.7, "s": sizes[n]}
            ax.scatter(e[:p], lrn[:p], marker="o", label=f"{regime}, n = {n}", **kw)
            ax.scatter(e[p:], lrn[p:], marker="x", **kw)
    lo, hi = min(lo_hi), max(lo_hi)
    ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, ls="--", label="learned = exact")
    ax.axhline(math.log(opts.tau), color="k", lw=0.6)
    ax.axvline(math.log(opts.tau), color="k", lw=0.6)
    ax.set(xlabel="exact (1/n) log Lambda_G(F(x))", ylabel=f"learned (1/n) log Lambda_G(F(x)), {max(opts.budgets)} steps",
           title="per point (o: x ~ U[0,1]^n, x: held-out x ~ p_g; all n)")
    ax.legend(fontsize=7, loc="best")

    labels, xs = [], 0
    for cell in numbers["cells"]:
        for k, (name, m) in enumerate(cell["models"].items()):
            d = m["P_inst"]["p_r"]
            colour = "k" if name == "exact" else ("tab:purple" if name == "control" else _COLOURS.get(cell["regime"], "gray"))
            marker = "s" if name == "exact" else ("v" if name == "control" else "o")
            bx.errorbar([xs + 0.15 * k], [d["estimate"]], yerr=[[d["estimate"] - d["lower"]], [d["upper"] - d["estimate"]]],
                        fmt=marker, color=colour, ms=5, capsize=2)
        labels.append((xs + 0.15 * (len(cell["models"]) - 1) / 2, f"{cell['regime']}\nn = {cell['n']}"))
        xs += 1
    bx.axhline(opts.level, color="gray", lw=0.8, ls="--")
    bx.set_xticks([x for x, _ in labels], [t for _, t in labels], fontsize=7, rotation=30, ha="right")
    bx.set(ylim=(-0.05, 1.05), ylabel=f"P_inst(tau = {opts.tau:g}) at x ~ U[0,1]^n, 95% Clopper-Pearson",
           title="squares: exact; circles: learned (budgets " + ", ".join(map(str, opts.budgets)) + " steps, left to right); "
                 "triangle: control", )
    bx.title.set_fontsize(8)
    fig.suptitle("Learned vs exact flows on known box mixtures (Theorem 4.3 geometry)", fontsize=11)
    save_png(fig, Path(out_dir) / FIGURE, dpi=110)
    return [FIGURE]
