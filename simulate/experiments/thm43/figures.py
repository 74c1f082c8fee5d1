"""Figures of the Theorem 4.3 experiment: the regime map on the (g/sigma, n) plane and the drivers over n.

* ``thm43_regime_map.png``: one block per ``m``; left ``P_inst(tau)``, right the route's ``p2``, as
  colour and number on the (g/sigma, n) plane (rows: cells ordered by ``g/sigma`` -- the set gap of a
  diagonal row, the measured mean gap of random boxes, none for the single box -- then ``sigma``;
  columns: ``n``; the number of points where sequential sampling added some; "cap" where the solver-cost cap
  stopped the sweep) and a last column with the cell's verdict (holds / fails / undetermined, coloured, with a
  legend: the interval rule of :mod:`simulate.decide` at the cell's largest ``n``).
* ``thm43_log_lambda.png``: mean ``(1/n) log Lambda_G(F(x))`` over ``n`` per cell, ``log tau`` marked.
* ``thm43_sqnorm.png``: mean ``||F(x)||^2/n`` over ``n`` per cell, ``1 + eps`` marked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from simulate.experiments.common import savefig
from simulate.experiments.thm43.geometry import Cell

__all__ = ["draw_figures", "row_order"]

#: the colour of each verdict in the regime map's verdict column (and its legend)
_VERDICT_COLOUR = {"holds": "#1a9850", "fails": "#d73027", "undetermined": "#d9d9d9"}
_SHORT = {"holds": "holds", "fails": "fails", "undetermined": "undet."}


def row_order(cells: list[Cell], rows: dict[str, dict]) -> list[Cell]:
    """Cells sorted by ``g/sigma`` (single box first, random boxes at their measured mean gap), then sigma."""

    def ratio(c: Cell) -> float:
        if c.gap_ratio is not None:
            return c.gap_ratio
        g = rows[c.label]["mean_gap_over_sigma"]
        return -1.0 if g is None else float(g)

    return sorted(cells, key=lambda c: (ratio(c), c.sigma))


def draw_figures(out_dir: Path, opts: Any, cells: list[Cell], records: dict[Cell, list[dict]], judged: Any) -> list[str]:
    """Draw the three figures into ``out_dir``; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    measured = [c for c in cells if records[c]]
    rows = {r["label"]: r for r in judged.numbers["cells"]}
    tl = f"{opts.tau_main:g}"
    ns = list(opts.ns)
    ms = sorted({c.m for c in measured})
    names: list[str] = []

    heights = [len([c for c in measured if c.m == m]) for m in ms] or [1]
    fig, axes = plt.subplots(len(heights), 2, figsize=(7.0 + 1.3 * len(ns), 2.6 + 0.3 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for row_ax, m in zip(axes, ms):
        order = row_order([c for c in measured if c.m == m], rows)
        for ax, (what, cid) in zip(row_ax, ((f"P_inst(tau={tl})", "thm43_pinst"), ("p2", "thm43_p2"))):
            grid = np.full((len(order), len(ns)), np.nan)
            for i, cell in enumerate(order):
                for rec in records[cell]:
                    j = ns.index(rec["n"])
                    grid[i, j] = rec["p2"]["estimate"] if cid == "thm43_p2" else rec["taus"][tl]["p_inst"]["estimate"]
                    ax.text(j, i, f"{grid[i, j]:.2f}" + (f"\n({rec['points']})" if rec["points"] != opts.num_points else ""),
                            ha="center", va="center", fontsize=6.5, linespacing=0.85)
                for j in range(len(records[cell]), len(ns)):
                    ax.text(j, i, "cap", ha="center", va="center", fontsize=6.5, color="0.45")
                cls = judged.classes[cid]["-" if cid == "thm43_p2" else tl][cell]
                ax.add_patch(Rectangle((len(ns) - 0.5, i - 0.5), 1.0, 1.0, color=_VERDICT_COLOUR[cls], clip_on=False))
                ax.text(len(ns), i, _SHORT[cls], ha="center", va="center", fontsize=6.5,
                        color="white" if cls != "undetermined" else "k")
            ax.imshow(np.ma.masked_invalid(grid), cmap="Blues", vmin=0, vmax=1.6, aspect="auto")
            labels = []
            for cell in order:
                r = rows[cell.label]
                g = "single box" if cell.geometry == "single" else (f"g/s={cell.gap_ratio:g}" if cell.gap_ratio is not None
                                                                     else f"random g/s~{r['mean_gap_over_sigma']:.2g}")
                labels.append(f"{g}, s={cell.sigma:g}")
            ax.set_yticks(range(len(order)), labels, fontsize=6.5)
            ax.set_xticks(range(len(ns) + 1), [str(n) for n in ns] + ["verdict"], fontsize=7)
            ax.set_xlim(-0.5, len(ns) + 0.5)
            ax.set_xlabel("n", fontsize=7)
            ax.set_title(f"m = {m}: {what}", fontsize=8)
    handles = [Patch(color=c, label=k) for k, c in _VERDICT_COLOUR.items()]
    axes[0][0].legend(handles=handles, loc="lower left", bbox_to_anchor=(-0.6, 1.08), ncol=3, fontsize=7, frameon=False,
                      title=f"Theorem 4.3 regime map (rows by g/sigma, then sigma): P_inst -> 1 (left), the route's p2 -> 0 "
                            f"(right); l = {opts.side:g}, tau = {tl}\ncells: estimate, (k) = points where more than "
                            f"{opts.num_points}; cap = the solver-cost cap stopped the n sweep; verdict at the largest n: "
                            f"95% Clopper-Pearson interval vs level {opts.level:g} (simulate.decide)",
                      title_fontsize=7.5, alignment="left")
    names.append(savefig(fig, out_dir, "thm43_regime_map.png"))

    for fname, key, ref, ylabel in (
        ("thm43_log_lambda.png", "log_Lambda", math.log(opts.tau_main), "mean (1/n) log Lambda_G(F(x))"),
        ("thm43_sqnorm.png", "sqnorm_over_n", 1.0 + opts.eps, "mean ||F(x)||^2 / n"),
    ):
        fig, axes = plt.subplots(1, len(ms) or 1, figsize=(7.4 * max(1, len(ms)), 4.6), squeeze=False)
        cmap = plt.get_cmap("viridis")
        for ax, m in zip(axes[0], ms):
            for cell in [c for c in measured if c.m == m]:
                recs = records[cell]
                col = cmap(opts.sigmas.index(cell.sigma) / max(1, len(opts.sigmas) - 1))
                style = {"single": "-", "random": ":"}.get(cell.geometry, "--")
                marker = "o" if cell.gap_ratio is None else "osd^v<>p"[sorted(opts.gap_ratios).index(cell.gap_ratio) % 8]
                ax.plot([r["n"] for r in recs], [r[key]["mean"] for r in recs], marker=marker, ls=style, color=col, ms=3,
                        lw=0.9, label=cell.label)
            ax.axhline(ref, color="r", lw=0.8, ls="--")
            ax.set_xscale("log", base=2)
            if key == "sqnorm_over_n":
                ax.set_yscale("log")
            ax.set_xlabel("n")
            ax.set_ylabel(ylabel)
            ax.set_title(f"m = {m} (dashed red: {'log tau' if key == 'log_Lambda' else '1 + eps'})", fontsize=8)
            ax.legend(fontsize=5, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        names.append(savefig(fig, out_dir, fname))
    return names
