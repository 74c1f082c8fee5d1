"""Judge of the Proposition 2.1 experiment: do parts (a) and (b) hold at every check point?

Proposition 2.1 (docs/theory.md §2.4): (a) ``mu_G(z, s u) -> lambda_G(z, u)`` as ``s -> 0``; (b)
``max_s mu_G(z, s v1) >= ||J_G(z)||_2 - eps``. A point passes when the checker found (a) converged
and (b) holding; ``verified`` when every point passes, ``holds in regime`` naming the groups where
all pass, ``refuted`` when no group passes entirely.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulate.experiments.common import Judged, Verdict

__all__ = ["groups_of", "verdict", "judge"]


def groups_of(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The per-group summaries (``line_x``, ``line_y``, ``random``, ``box``) of the unit records, in order."""
    return {g: summ for rec in records.values() for g, summ in rec["groups"].items()}


def verdict(units: list[dict[str, Any]], eps: float) -> Verdict:
    """The verdict on Proposition 2.1 from the group summaries (see the module docstring)."""
    total = sum(u["points"] for u in units)
    bad = [(u["unit"], i) for u in units for i in u["failed_points"]]
    orders = [o for u in units for o in u["order"] if o is not None]
    key = (
        f"{total - len(bad)}/{total} points pass (a) and (b); median order {np.median(orders):.2f}"
        if orders else f"{total - len(bad)}/{total} points pass (a) and (b)"
    )
    parts = []
    for u in units:
        parts.append(
            f"{u['unit']} (n={u['n']}, {u['points']} pts): converged {u['converged_fraction']:.0%}, "
            f"(b) holds {u['holds_fraction']:.0%}, min error median {u['min_error_median']:.1e} / max "
            f"{u['min_error_max']:.1e} (tol 100 sqrt(eps_64) max(1, lambda) ~ 1.5e-6 relative), order "
            + (f"{u['order_median']:.2f} [{u['order_min']:.2f}, {u['order_max']:.2f}]" if u["order_median"] is not None else "n/a (affine)")
            + f", max(||J||_2 - max mu) = {u['worst_gap_b']:.1e} (eps {eps:g}), ||J||_2 > 1 at {u['guaranteed_unstable_points']}, "
            f"instability found at {u['unstable_points']}"
        )
    evidence = "; ".join(parts)
    if not bad:
        return Verdict("verified", key, evidence)
    ok_units = [u["unit"] for u in units if not u["failed_points"]]
    if ok_units:
        return Verdict(f"holds in regime: units {', '.join(ok_units)} (fails at {len(bad)} points elsewhere)", key,
                       evidence + f"; failing points: {bad[:10]}")
    return Verdict("refuted", key, evidence + f"; failing points: {bad[:10]}")


def judge(opts: Any, records: dict[str, dict[str, Any]]) -> Judged:
    """The verdict and ``result.json`` numbers from the unit records (``gmm2d``, ``box``)."""
    units = groups_of(records)
    numbers = {
        "units": {k: {kk: vv for kk, vv in u.items() if kk not in ("errors", "curves")} for k, u in units.items()},
        "line": units["line_x"].get("curves", {}),
        "jacobian_ad_vs_fd": {k: u["jacobian_ad_vs_fd_max_rel"] for k, u in units.items()},
        "errors": {k: u["errors"] for k, u in units.items()},
        "seconds_per_unit": {k: rec["seconds"] for k, rec in records.items()},
    }
    return Judged(verdict(list(units.values()), opts.eps), numbers)
