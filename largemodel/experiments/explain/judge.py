r"""Judge of the explanation study (docs/theory.md §5.3): three findings decided on 95% intervals,
each also run on the synthetic controls (:mod:`.controls`), where it can come out "fails".

* ``amplification_drives_error``: across images the error varies with the amplification, not the
  discrepancy: the share of ``var(log e)`` going with ``log D`` is below :data:`SHARE_LEVEL`
  (holds when the interval's upper end is below it, fails when its lower end is above it);
* ``mu_bar_predicts_error``: Spearman(``mu_bar``, the actual reconstruction error) at the run's
  settings is at least :data:`RHO_LEVEL` (holds when the interval's lower end is above it, fails
  when its upper end is below it);
* ``linear_at_discrepancy``: ``G_N`` is linear over the real discrepancy: the median of
  ``||J_G(z*)(z~ - z*)|| / ||G_N(z~) - y||`` lies in :data:`RATIO_BAND` and the median angle between
  them below :data:`ANGLE_LEVEL` degrees (holds when both intervals are inside, fails when either
  lies wholly outside).

Otherwise "undetermined". The report rows stay supplements to Theorem 3.1 (``thm31``) and Fig. 4(c)
(``fig4c``); the decisions and the controls go with them.
"""

from __future__ import annotations

from typing import Any

from simulate.experiments.common import Judged
from simulate.verdict import Status, StatusKind, Verdict

__all__ = ["SHARE_LEVEL", "RHO_LEVEL", "RATIO_BAND", "ANGLE_LEVEL", "decide", "judge", "controls_table"]

_SUPPLEMENT = Status.of(StatusKind.SUPPLEMENT)

#: the discrepancy's share of var(log error) below which amplification "drives" the error
SHARE_LEVEL = 0.5
#: the Spearman(mu_bar, error) at or above which mu_bar "predicts" the error
RHO_LEVEL = 0.4
#: the band of the linearization ratio (prediction / actual) and the angle limit (degrees)
RATIO_BAND = (0.8, 1.25)
ANGLE_LEVEL = 20.0


def _below(lo: float, hi: float, level: float) -> str:
    """"holds" when the interval ``[lo, hi]`` lies below ``level``, "fails" when above, else "undetermined"."""
    return "holds" if hi < level else "fails" if lo > level else "undetermined"


def decide(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The three decisions on one resolution's summary ``s`` (``largemodel.diagnose.explain_summary``):
    ``{finding: {status, key_number}}``."""
    share = s["share_discrepancy"]
    rho = s.get("spearman_mu_bar_error", {})
    r_lo, r_hi = rho.get("spearman_ci", (float("nan"), float("nan")))
    ratio, angle = s["linear_ratio_median"], s["linear_angle_median"]
    inside = ratio["ci"][0] > RATIO_BAND[0] and ratio["ci"][1] < RATIO_BAND[1] and angle["ci"][1] < ANGLE_LEVEL
    outside = ratio["ci"][1] < RATIO_BAND[0] or ratio["ci"][0] > RATIO_BAND[1] or angle["ci"][0] > ANGLE_LEVEL
    return {
        "amplification_drives_error": {"status": _below(*share["ci"], SHARE_LEVEL),
                                       "key_number": f"discrepancy share {_ci(share)}"},
        "mu_bar_predicts_error": {"status": _below(-r_hi, -r_lo, -RHO_LEVEL),
                                  "key_number": f"Spearman(mu_bar, error) {rho.get('spearman_rho', float('nan')):.2f} "
                                                f"[{r_lo:.2f}, {r_hi:.2f}]"},
        "linear_at_discrepancy": {"status": "holds" if inside else "fails" if outside else "undetermined",
                                  "key_number": f"ratio {_ci(ratio)}, angle {_ci(angle, 1)} deg"},
    }


def _ci(d: dict[str, Any], digits: int = 2) -> str:
    lo, hi = d["ci"]
    return f"{d['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _one(s: dict[str, Any]) -> dict[str, Any]:
    ((_, r),) = s["by_resolution"].items()
    return r


def judge(main: dict[str, Any], trend: list[dict[str, Any]], controls: dict[str, dict[str, Any]], steps: int) -> Judged:
    """Supplements ``thm31`` (decomposition, linearization, inverters) and ``fig4c`` (mu_bar against the
    error) from the main model's summary, the per-resolution ``trend`` and the controls' summaries."""
    s = _one(main)
    res, d = s["n"], decide(s)
    ctl = {name: decide(_one(c)) for name, c in controls.items()}

    def with_controls(finding: str) -> str:
        return "; ".join(f"{name}: {c[finding]['status']} ({c[finding]['key_number']})" for name, c in ctl.items())

    inv = s["inverters"]
    med = s.get("medians", {})
    at = s.get("at_exact_nfe", {})
    equal_nfe = ""
    if "exact" in inv and "heun" in at:
        equal_nfe = (
            f" Inverters: G_N's discretization floor ||G_N(F(y)) - y|| (F by an adaptive solve) is "
            f"{med.get('floor_error', float('nan')):.3g} (median), ||F(y) - z*|| {med.get('floor_distance', float('nan')):.3g}; "
            f"at the {at['heun']['exact_nfe']:.0f} NFE the exact inversion spends (tolerance {s.get('exact_tol') or float('nan'):.0e}), "
            f"its error {inv['exact']['median_error'][0]:.2g} is 10^{_ci(at['heun']['log10_error_over_exact'], 1)} below "
            f"Heun's and 10^{_ci(at['euler']['log10_error_over_exact'], 1)} below Euler's; Heun's error "
            f"{inv['heun@exact_nfe']['median_error'][0]:.3g} and distance to z* {inv['heun@exact_nfe']['median_distance'][0]:.3g} "
            f"sit on the floor.")
    decomposition = Verdict(
        _SUPPLEMENT,
        f"amplification drives the error: {d['amplification_drives_error']['status']} "
        f"({d['amplification_drives_error']['key_number']}); linear at the discrepancy: "
        f"{d['linear_at_discrepancy']['status']}",
        f"Per image, error e = amplification A x discrepancy D against the exact discrete inverse z* "
        f"(digits model trained here, n = {res}, {s['n_images']} held-out images, {steps} Euler steps; "
        f"{100 * s['exact_converged_fraction']:.0f}% converged). Spread across images (sd, 95% bootstrap): "
        f"log e {_ci(s['sd_log_error'])}, log D {_ci(s['sd_log_discrepancy'])}, log A {_ci(s['sd_log_amplification'])}; "
        f"Pearson with log e: log D {_ci(s['corr_log_discrepancy_error'])}, log A {_ci(s['corr_log_amplification_error'])}. "
        f"Amplification drives the error (discrepancy share < {SHARE_LEVEL}): "
        f"{d['amplification_drives_error']['status']} ({d['amplification_drives_error']['key_number']}); controls: "
        f"{with_controls('amplification_drives_error')}. Linearization at the real discrepancy "
        f"(||J_G(z*)(z~ - z*)|| / ||G_N(z~) - y|| in {RATIO_BAND}, angle < {ANGLE_LEVEL:.0f} deg): "
        f"{d['linear_at_discrepancy']['status']} ({d['linear_at_discrepancy']['key_number']}; 10-90% of the ratio "
        f"{s['linear_ratio_range'][0]:.2f}-{s['linear_ratio_range'][1]:.2f}); controls: "
        f"{with_controls('linear_at_discrepancy')}.{equal_nfe}",
    )
    predicts = Verdict(
        _SUPPLEMENT,
        f"mu_bar predicts the error: {d['mu_bar_predicts_error']['status']} ({d['mu_bar_predicts_error']['key_number']})",
        f"Spearman(mu_bar, actual reconstruction error) on the same images and settings (K = 8 perturbations at z*), "
        f"level {RHO_LEVEL}: {d['mu_bar_predicts_error']['status']} ({d['mu_bar_predicts_error']['key_number']}); "
        f"controls: {with_controls('mu_bar_predicts_error')}. " + ("By resolution: " if len(trend) > 1 else "")
        + "; ".join(f"n = {t['n']}: median mu_bar {t.get('mu_bar', float('nan')):.3g}, median (1/n) log Lambda "
                    f"{t.get('log_Lambda', float('nan')):.2f}, P_inst {t.get('P_inst') or 0.0:.2f}, median error "
                    f"{t.get('error_latent', float('nan')):.3g}" for t in trend) + ".",
    )
    return Judged(overall=decomposition, claims={"thm31": decomposition, "fig4c": predicts})


def controls_table(main: dict[str, Any], controls: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per supplement (``thm31``, ``fig4c``) the controls as ``[{name, finding, status, key_number}]``,
    the trained model's own decision first (``name`` "trained model")."""
    rows = {"thm31": [], "fig4c": []}
    for name, summ in (("trained model", main), *controls.items()):
        d = decide(_one(summ))
        for claim, findings in (("thm31", ("amplification_drives_error", "linear_at_discrepancy")),
                                ("fig4c", ("mu_bar_predicts_error",))):
            rows[claim] += [{"name": name, "finding": f, **d[f]} for f in findings]
    return rows
