r"""Judge of the explanation study: supplement verdicts on Theorem 3.1 (error = amplification x
discrepancy, docs/theory.md §5.3) and Fig. 4(c) (the causal test; §10.4)."""

from __future__ import annotations

from typing import Any

from simulate.experiments.common import Judged
from simulate.verdict import Status, StatusKind, Verdict

__all__ = ["judge"]

_SUPPLEMENT = Status.of(StatusKind.SUPPLEMENT)


def _ci(d: dict[str, Any], digits: int = 2) -> str:
    lo, hi = d["ci"]
    return f"{d['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def judge(main: dict[str, Any], trend: list[dict[str, Any]], steps: int) -> Judged:
    """The supplements of the explanation study (docs/theory.md §5.3), from the main model's summary
    ``main`` and the per-resolution ``trend``:

    * ``thm31``: the per-image decomposition ``error = A D`` (amplification ``A`` times discrepancy
      ``D = ||z~ - z*||``): the shares of ``var(log error)`` across images carried by ``log A`` and
      ``log D``, with 95% bootstrap intervals, and the exact inversion's error reduction;
    * ``fig4c``: the causal test: the median log-log slope of the error against ``||delta||`` from
      ``z*`` (1 in the linear regime) and Spearman(``mu_bar``, error) at fixed ``||delta||`` next to
      the natural one.

    Both are supplements (status ``supplement``); ``overall`` is the ``thm31`` one.
    """
    ((res, s),) = main["by_resolution"].items()
    sp, nat = s["spearman_fixed_delta"], s["spearman_natural"]
    decomposition = Verdict(
        _SUPPLEMENT,
        f"error share: amplification {_ci(s['share_amplification'])}, discrepancy {_ci(s['share_discrepancy'])}",
        f"Per-image decomposition on the digits {res}px model trained here ({s['n_images']} held-out images, "
        f"{steps} Euler steps): reconstruction error = amplification x discrepancy with the exact discrete "
        f"inverse z* (largest identity gap {s['identity_gap_max_relative']:.1e} of the error; "
        f"{100 * s['exact_converged_fraction']:.0f}% of images converged). Share of var(log error) across images: "
        f"amplification {_ci(s['share_amplification'])}, discrepancy {_ci(s['share_discrepancy'])} (95% bootstrap). "
        f"Median amplification / mu_bar {_ci(s['amp_over_mu_median'])} and lambda along (z~ - z*) / mu_bar "
        f"{_ci(s['lambda_dir_over_mu_median'])}: below 1 means the inversion's error points along directions G "
        f"amplifies less than a random one. Exact inversion at equal N lowers the error by a median factor "
        f"10^{_ci(s['exact_reduction_log10'], 1)} (it spends more evaluations); at equal NFE, against Euler "
        f"inversion: " + ", ".join(f"{r['nfe']:.0f} NFE 10^{_ci(r, 1)}" for r in s["exact_vs_euler_equal_nfe_log10"])
        + ".",
    )
    causal = Verdict(
        _SUPPLEMENT,
        f"causal slope {_ci(s['causal_slope_median'], 3)}; Spearman at fixed ||delta|| {sp['spearman_rho']:.2f}",
        f"Causal test on the same model: from z*, controlled perturbations of RMS size 1e-4..1e-1 give a median "
        f"log-log slope of error against ||delta|| of {_ci(s['causal_slope_median'], 3)} (random directions) and "
        f"{_ci(s['causal_slope_top_median'], 3)} (top singular direction); at fixed ||delta|| the error ranks images by "
        f"mu_bar with Spearman {sp['spearman_rho']:.2f} [{sp['spearman_ci'][0]:.2f}, {sp['spearman_ci'][1]:.2f}], "
        f"against {nat['spearman_rho']:.2f} [{nat['spearman_ci'][0]:.2f}, {nat['spearman_ci'][1]:.2f}] for the "
        f"natural reconstruction error. By resolution: "
        + "; ".join(f"n = {t['n']}: median mu_bar {t.get('mu_bar', float('nan')):.3g}, median log Lambda "
                    f"{t.get('log_Lambda', float('nan')):.2f}, P_inst {t.get('P_inst') or 0.0:.2f}, median error "
                    f"{t.get('error_latent', float('nan')):.3g}" for t in trend) + ".",
    )
    return Judged(overall=decomposition, claims={"thm31": decomposition, "fig4c": causal})
