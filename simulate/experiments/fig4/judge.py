r"""Judge of the Fig. 4(b) experiment: does the reconstruction error correlate with ``mu_bar``?

A pipeline shows a positive correlation when Spearman's rho of the error ``e`` with ``mu_bar``
(docs/theory.md §2.5) is > 0 and the lower end of its 95% bootstrap interval is > 0
(:func:`simulate.stats.classify_correlation`, §9.6). ``verified`` if both the Euler and the Heun
pipelines do; ``holds in regime: Euler ...`` if only Euler does; ``refuted`` otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulate.stats import classify_correlation

from simulate.experiments.common import Judged, Verdict
from simulate.experiments.fig4.options import Fig4Options

__all__ = ["judge"]


def _fmt(summaries: dict[str, Any], name: str) -> str:
    c = summaries[name]["correlation"]
    lo_, hi_ = c["spearman_ci"]
    plo, phi = c["pearson_ci"]
    return (f"{name}: Spearman {c['spearman_rho']:.3f} (95% CI [{lo_:.3f}, {hi_:.3f}], p={c['spearman_p']:.1e}), "
            f"Pearson(log-log) {c['pearson_r']:.3f} (CI [{plo:.3f}, {phi:.3f}], p={c['pearson_p']:.1e})"
            if c["spearman_rho"] is not None and lo_ is not None and plo is not None else f"{name}: correlation undefined")


def judge(opts: Fig4Options, box: np.ndarray, summaries: dict[str, Any]) -> Judged:
    """The Fig. 4(b) verdict from the pipelines' summaries; ``numbers["classification"]`` per pipeline."""
    cls = {name: classify_correlation(s["correlation"]) for name, s in summaries.items()}
    have = [p for p in ("euler", "heun") if p in summaries]
    if "euler" in cls and cls["euler"] == "positive" and all(cls[p] == "positive" for p in have):
        status = "verified"
    elif cls.get("euler") == "positive":
        others = ", ".join(f"{p}: {cls[p]}" for p in have if p != "euler")
        status = f"holds in regime: Euler inversion + regeneration (positive); {others}"
    else:
        status = "refuted"
    key = "; ".join(_fmt(summaries, p) for p in have) if have else "no Euler / Heun pipeline run"
    parts = []
    for name, s in summaries.items():
        d = s["decomposition"]
        ex = s["exact_inversion"]
        parts.append(
            f"{_fmt(summaries, name)}; error median {s['error']['median']:.2e} (max {s['error']['max']:.2e}); "
            f"decomposition vs {d['reference']}: Spearman(amplification, mu_bar) {d['spearman_amplification_mu_bar']:.3f}, "
            f"corr(log e, log ||z~ - z_ref||) {d['pearson_log_error_log_disc']:.3f}, corr(log e, log ||z~ - z*_dopri5||) "
            f"{d['pearson_log_error_log_disc_dopri5']:.3f}, corr(log e, log mu_bar) {d['pearson_log_error_log_mu_bar']:.3f}; "
            f"R^2 of log e: disc alone {d['r2_disc']:.3f}, mu_bar alone {d['r2_mu_bar']:.3f}, both {d['r2_both']:.3f}"
            + (f"; exact (fixed-point) inversion error max {ex['max_error']:.1e} (converged: {ex['converged']})" if ex else "")
        )
    evidence = (
        f"Positive correlation = Spearman > 0 with its {opts.confidence:.0%} bootstrap interval above 0. "
        f"{opts.points} points x uniform on {box.tolist()}; mixture means {np.asarray(opts.means).tolist()}, std "
        f"{opts.stds}, weights {list(opts.weights)}; N = {opts.steps} steps; mu_bar with K = "
        f"{opts.num_perturbations}, eps = {opts.eps:g}. " + " | ".join(parts)
    )
    return Judged(Verdict(status, key, evidence), numbers={"classification": cls})
