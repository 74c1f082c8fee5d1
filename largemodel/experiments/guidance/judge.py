r"""The verdict on guidance: does classifier-free guidance raise the reconstruction error? (docs/theory.md §10.9)

Decided on the paired per-image change of the latent MSE from ``W_ref = 1`` to the largest ``W`` under the
class prompt (``largemodel.study.guidance.paired_change``: the sign test's Clopper-Pearson interval of
the share of images whose error rises, against 1/2, by ``simulate.decide``): ``verified`` when it lies
above 1/2, ``refuted`` when below or when every change is a rounding-level tie (``W`` changes
nothing), ``inconclusive`` when it straddles 1/2. The negative control (:func:`control_verdict`) runs the
same judge on the null prompt, where ``u_W = u_u`` for every ``W``: a judge that says "W raises the
error" there is broken.
"""

from __future__ import annotations

from typing import Any

from simulate.verdict import Verdict

__all__ = ["change_text", "control_verdict", "judge"]


def change_text(c: dict[str, Any]) -> str:
    """``"increases: median diff 0.01 [0.002, 0.05], rises on 20/24 [0.63, 0.95]"``."""
    lo, hi = c["median_ci"]
    share = "all ties" if c["up"] + c["down"] == 0 else (
        f"rises on {c['up']}/{c['up'] + c['down']} [{c['frac_up_ci'][0]:.2f}, {c['frac_up_ci'][1]:.2f}]")
    return f"{c['status']}: median diff {c['median']:.3g} [{lo:.3g}, {hi:.3g}], {share}"


def _verdict(effects: dict[str, Any], mode: str, what: str) -> Verdict:
    w = max(effects["scales"])
    c = effects["vs_reference"][f"mse_latent|{mode}|{w:g}"]
    status = {"increases": "verified", "decreases": "refuted", "unchanged": "refuted"}.get(
        c["status"], "inconclusive: the sign test's interval contains 1/2")
    others = "; ".join(f"{m} {change_text(effects['vs_reference'][f'{m}|{mode}|{w:g}'])}"
                       for m in ("mu_bar", "log_Lambda") if f"{m}|{mode}|{w:g}" in effects["vs_reference"])
    return Verdict(status, f"error at W = {w:g} vs {effects['reference_scale']:g} ({what}): {change_text(c)}",
                   f"Paired per-image changes from W = {effects['reference_scale']:g} to {w:g} ({what}): latent MSE "
                   f"{change_text(c)}; {others}.")


def judge(effects: dict[str, Any]) -> Verdict:
    """The claim's verdict from ``largemodel.study.guidance.guidance_effects`` under the class prompt."""
    return _verdict(effects, "caption", "class prompt")


def control_verdict(effects: dict[str, Any]) -> Verdict:
    """The same judge on the null prompt, where ``W`` cannot change the field (must not say verified)."""
    return _verdict(effects, "empty", "null prompt: u_W = u_u")
