r"""Judge of the Fig. 4(c) experiment: the verdict on Fig. 4(c) / A1, and the supplement verdicts it adds
to Theorem 4.3 (``P_inst`` by resolution) and Lemma D.1 (one pass against the full Jacobian)."""

from __future__ import annotations

from typing import Any

from simulate.experiments.common import Judged
from simulate.verdict import Status, StatusKind, Verdict

__all__ = ["judge_fig4c", "judge", "trend_verdict", "jacobian_verdict"]

#: status of a verdict that adds evidence to a claim another experiment decides
_SUPPLEMENT = Status.of(StatusKind.SUPPLEMENT)


def judge_fig4c(corr: dict[str, Any], label: str, stand_in: bool) -> Verdict:
    """The verdict on Fig. 4(c) (docs/theory.md §10.4, §9.6) from one study: does the reconstruction error
    rise with the averaged instability coefficient ``mu_bar`` on a real network?

    ``corr``: the study's ``mu_bar~mse_latent`` correlation (Spearman ``rho`` with its 95% bootstrap
    interval ``[lo, hi]``). ``verified`` when ``lo > 0`` on the user's model; on a model trained
    here (``stand_in``) ``holds in regime`` (SD3.5 / FLUX not run); ``refuted`` when ``hi < 0``;
    ``inconclusive`` when the interval contains 0.
    """
    rho, (lo, hi) = corr["spearman_rho"], corr["spearman_ci"]
    key = f"Spearman {rho:.2f} [{lo:.2f}, {hi:.2f}], n = {corr['n']} ({label})"
    evidence = (
        f"Reconstruction error (latent MSE) against the paper's averaged instability coefficient mu_bar "
        f"on {label}: Spearman {rho:.3f} (95% bootstrap [{lo:.3f}, {hi:.3f}], p = {corr['spearman_p']:.2g}); "
        f"Pearson of the logarithms {corr['pearson_r']:.3f} [{corr['pearson_ci'][0]:.3f}, {corr['pearson_ci'][1]:.3f}]."
    )
    if lo > 0:
        status = (Status.of(StatusKind.HOLDS_IN_REGIME, "small flow models trained here (SD3.5/FLUX not run)")
                  if stand_in else Status.of(StatusKind.VERIFIED))
    elif hi < 0:
        status = Status.of(StatusKind.REFUTED)
    else:
        status = Status.of(StatusKind.INCONCLUSIVE, "the interval contains 0")
    if stand_in:
        evidence += (" These are small pixel-space SD3-architecture transformers trained offline on this machine, "
                     "standing in for SD3.5 / FLUX, whose weights cannot be downloaded here; run "
                     "`pfode report --suites largemodel --model DIR --images DIR` on a real model folder.")
    return Verdict(status, key, evidence)


def trend_verdict(trend: list[dict[str, Any]]) -> Verdict:
    """Supplement to Theorem 4.3 (docs/theory.md §8.5): how ``P_inst(1)`` changes with ``n`` on the trained
    models, and whether Theorem 4.1's ``P_inst >= 1 - p1 - p2`` (§6.3) holds at every resolution."""
    trend_text = "; ".join(
        f"n = {r['n']}: P_inst = {r['P_inst']:.2f}, p1 = {r['p1']:.2f}, p2 = {r['p2']:.2f}, "
        f"median ||F(x)||^2/n = {r['median_z2_over_n']:.2f}" for r in trend
    )
    first, last = trend[0]["P_inst"], trend[-1]["P_inst"]
    change = "grows" if last > first else ("decreases" if last < first else "is unchanged")
    return Verdict(
        _SUPPLEMENT, f"P_inst(1) {trend[0]['P_inst']:.2f} -> {trend[-1]['P_inst']:.2f}",
        f"On {trend[0]['data']} models trained here on {trend[0]['train_images']} images at growing resolution "
        f"({trend_text}); P_inst "
        f"{change} with n (medians of log Lambda_G: "
        f"{', '.join(format(r['median_log_Lambda'], '.2f') for r in trend)}). Theorem 4.1's bound 1 - p1 - p2 "
        f"{'holds' if all(r['bound_holds'] for r in trend) else 'FAILS'} at every resolution.",
    )


def jacobian_verdict(jac: dict[str, Any]) -> Verdict:
    """Supplement to Lemma D.1 (docs/theory.md §6.1): the largest gap between the one-pass ``log Lambda_G``
    and the slogdet of the full Jacobian of the discrete ``G`` (its discretisation), and Hutchinson's
    gap to the exact divergence."""
    return Verdict(
        _SUPPLEMENT, f"max |diff| {jac['max_abs_diff_exact_vs_jacobian']:.2g}",
        f"On the trained digits model ({jac['images']} held-out images, {jac['steps']} Euler steps): log Lambda_G "
        f"from the one-pass divergence integral vs slogdet of the full Jacobian of the discrete G differ by at "
        f"most {jac['max_abs_diff_exact_vs_jacobian']:.3g} (the gap is the discretisation of G); Hutchinson "
        f"(8 probes) vs exact divergence: {jac['max_abs_diff_hutchinson_vs_exact']:.3g}.",
    )


def judge(numbers: dict[str, Any], label: str, user_label: str | None = None) -> Judged:
    """Decide Fig. 4(c) (docs/theory.md §10.4, §9.6): Spearman ``rho`` of the latent reconstruction error
    against ``mu_bar`` with its 95% bootstrap interval ``[lo, hi]``: ``verified`` if ``lo > 0`` on the
    user's model (``numbers["study_user"]``, named ``user_label``), which decides when given; on the model
    trained here (``numbers["study_digits"]``, named ``label``) ``holds in regime`` (a stand-in);
    ``refuted`` if ``hi < 0``; else ``inconclusive`` (:func:`judge_fig4c`). Adds the supplement verdicts
    ``thm43_pinst`` (:func:`trend_verdict`) and ``lemma_d1`` (:func:`jacobian_verdict`).
    """
    corr = numbers["study_digits"]["correlations"]["mu_bar~mse_latent"]
    fig4c = judge_fig4c(corr, label, True)
    if "study_user" in numbers:
        fig4c = judge_fig4c(numbers["study_user"]["correlations"]["mu_bar~mse_latent"], str(user_label), False)
        fig4c.evidence += (f" Trained stand-in for comparison: {corr['spearman_rho']:.3f} "
                           f"[{corr['spearman_ci'][0]:.3f}, {corr['spearman_ci'][1]:.3f}].")
    claims = {"fig4c": fig4c, "thm43_pinst": trend_verdict(numbers["trend"]),
              "lemma_d1": jacobian_verdict(numbers["lemma_d1_trained"])}
    return Judged(overall=fig4c, claims=claims)
