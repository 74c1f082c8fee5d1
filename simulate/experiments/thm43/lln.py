r"""Independent oracle for the single-box control: the ``n -> inf`` limits by the law of large numbers.

A single box ``[a, a + l]^n`` with kernel ``sigma`` is a product measure, so the flow acts coordinate
by coordinate, and ``||F(x)||^2 / n``, ``log p_g(x) / n`` and ``(1/n) log Lambda_G(F(x))`` are means of
``n`` i.i.d. per-coordinate terms of ``u = x_d - a`` (docs/theory.md §8, §6.1).
Their limits are 1-D integrals of the 1-D map; they predict each claim's fate for ``m = 1``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from simulate.fields import BoxMixture
from simulate.maps import invert
from theory.thm41 import lemma_d2_log_threshold, log_standard_normal_density

__all__ = ["lln_limits"]


def lln_limits(sigma: float, side: float, *, eps: float, taus: Sequence[float], nodes: int = 800,
               box_offset: float | None = None) -> dict[str, Any]:
    r"""Per-coordinate ``n -> inf`` limits of the single-box cell (law of large numbers, Lemma D.1).

    With ``u = x_d - a`` (``x_d ~ U[0, 1]``; the box at ``a = box_offset``, default the centred
    ``1/2 - l/2``) and the 1-D map ``F_1`` of the box ``[0, l]`` with kernel ``sigma``:
    ``A = E[F_1(u)^2]`` (limit of ``||F||^2/n``), ``B = E[log p_1(u)]`` (of ``log p_g / n``),
    ``C = E[log phi(F_1(u)) - log p_1(u)]`` (of ``(1/n) log Lambda``). Midpoint rule with ``nodes``
    nodes; the 1-D map by dopri5 at ``rtol = 1e-9``. Predictions: ``p2 -> 0`` iff ``A < 1 + eps``;
    ``p1(tau) -> 0`` iff ``B < -log(2 pi)/2 - (1 + eps)/2 - log tau``; ``P_inst(tau) -> 1`` iff
    ``C > log tau``; ``n_visible = (1.645 sd / |margin|)^2`` is where the 95% side is reached (CLT).
    """
    if nodes < 2:
        raise ValueError(f"nodes must be >= 2, got {nodes}")
    a = 0.5 - 0.5 * side if box_offset is None else box_offset
    edges = np.linspace(-a, 1.0 - a, nodes + 1)
    u = 0.5 * (edges[1:] + edges[:-1])
    w = np.full(nodes, 1.0 / nodes)
    field = BoxMixture([[0.0]], [[side]], [1.0], sigma, dtype=torch.float64)
    with torch.no_grad():
        xu = torch.from_numpy(u[:, None])
        z = invert(field, xu, solver="dopri5", rtol=1e-9, atol=1e-11).x[:, 0].numpy()
        lp = field.log_prob(xu, 1.0).numpy()
    f2 = z * z
    ll = log_standard_normal_density(sq_norm=f2, n=1) - lp  # Lemma D.1 per coordinate: log phi(F_1(u)) - log p_1(u)

    def moments(v: np.ndarray) -> tuple[float, float]:
        mean = float((w * v).sum())
        return mean, float(math.sqrt(max(0.0, (w * (v - mean) ** 2).sum())))

    def visible(sd: float, margin: float) -> float | None:
        return (1.645 * sd / abs(margin)) ** 2 if margin != 0 else None

    a_mean, a_sd = moments(f2)
    b_mean, b_sd = moments(lp)
    c_mean, c_sd = moments(ll)
    out: dict[str, Any] = {
        "sigma": sigma,
        "side": side,
        "sqnorm_per_dim": a_mean,
        "sqnorm_per_dim_sd": a_sd,
        "log_pg_per_dim": b_mean,
        "log_pg_per_dim_sd": b_sd,
        "log_Lambda": c_mean,
        "log_Lambda_sd": c_sd,
        "p2_to_zero": bool(a_mean < 1.0 + eps),
        "p2_n_visible": visible(a_sd, a_mean - 1.0 - eps),
        "taus": {},
    }
    for tau in taus:
        thr = float(lemma_d2_log_threshold(1, tau, 1.0 + eps))  # the p1 level per coordinate (Lemma D.2, n = 1)
        out["taus"][f"{tau:g}"] = {
            "p1_threshold_per_dim": thr,
            "p1_to_zero": bool(b_mean < thr),
            "p1_n_visible": visible(b_sd, b_mean - thr),
            "p_inst_to_one": bool(c_mean > math.log(tau)),
            "p_inst_n_visible": visible(c_sd, c_mean - math.log(tau)),
        }
    return out
