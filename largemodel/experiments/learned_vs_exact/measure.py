r"""One field measured at given points with given noise: the per-point numbers of the learned-vs-exact experiment.

For a field (the exact box mixture, or a learned net wrapped by :class:`~.model.NetField`) and data points
``x`` ``(B, n)``, with the same seeds for every field (the same perturbation directions), every estimator is
the simulator's (docs/theory.md §10.8):

* reconstruction error at ``N`` Euler steps (:func:`simulate.maps.reconstruct`: Euler inversion, Euler
  regeneration), per coordinate: ``||G_N(F~_N(x)) - x|| / sqrt(n)``, for each ``N`` of ``steps``;
* at the inverted noise ``z~ = F~_N(x)`` of the first ``N``: ``lambda_G(z~, u)`` by a JVP through the Euler
  ``G_N`` (:func:`simulate.instability.lambda_G`, §2.1, §9.1; ``u`` a random unit direction) and the paper's
  ``mu_bar(z~)`` with ``K`` perturbations of norm ``eps_rms sqrt(n)`` (:func:`simulate.instability.averaged_instability`,
  §2.5);
* ``ell(x) = (1/n) log Lambda_G(F(x))`` with ``F`` by dopri5 (:func:`simulate.instability.log_Lambda_G_at_inverse`,
  Lemma D.1, §6.1): the exact field by the density ratio ``(log phi(F(x)) - log p_g(x)) / n``, a learned field
  by the divergence integral along the inversion; and the field's own log density of ``x``: exact
  ``log p_g(x)``, learned ``log p_theta(x) = log phi(F(x)) - n ell(x)`` (change of variables, Lemma D.1).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

__all__ = ["LOG_LAMBDA_METHODS", "measure_field"]

#: how ``ell`` is measured: the density ratio needs the field's exact ``log_prob``; the divergence integral does not
LOG_LAMBDA_METHODS = ("density_ratio", "divergence")


def measure_field(field: Any, x: torch.Tensor, *, log_lambda: str, steps: tuple[int, ...], perturbations: int,
                  eps_rms: float, rtol: float, atol: float, seed: int) -> dict[str, Any]:
    """The per-point numbers of one field at the points ``x`` (module docstring); lists of floats, one per row.

    Keys: ``err_<N>`` per ``N`` of ``steps``, ``lambda_jvp``, ``mu_bar``, ``log_Lambda`` (``ell``),
    ``z_norm2_over_n`` (``||F(x)||^2 / n``), ``log_p`` (the field's log density of ``x``), and ``nfe_dopri5``,
    ``seconds``. ``seed`` fixes the JVP direction and ``mu_bar``'s perturbations (the same for every field).
    """
    from simulate.instability import averaged_instability, lambda_G, log_Lambda_G_at_inverse
    from simulate.maps import reconstruct
    from theory.estimators import unit_directions
    from theory.thm41 import log_standard_normal_density

    if log_lambda not in LOG_LAMBDA_METHODS:
        raise ValueError(f"log_lambda must be one of {', '.join(LOG_LAMBDA_METHODS)}, got {log_lambda!r}")
    t0 = time.perf_counter()
    b, n = x.shape
    out: dict[str, Any] = {}
    first = None
    for big_n in steps:
        rec = reconstruct(field, x, inv_solver="euler", inv_steps=big_n, gen_solver="euler", gen_steps=big_n)
        out[f"err_{big_n}"] = (rec.error / math.sqrt(n)).tolist()
        if first is None:
            first = rec
    g_kw = {"solver": "euler", "steps": steps[0]}
    z = first.z.detach()
    out["lambda_jvp"] = lambda_G(field, z, unit_directions((b, n), torch.Generator().manual_seed(seed), z), method="jvp", **g_kw).detach().tolist()
    out["mu_bar"] = averaged_instability(field, z, num_perturbations=perturbations, eps=eps_rms * math.sqrt(n),
                                         generator=torch.Generator().manual_seed(seed + 1),
                                         gz=first.x_hat.detach(), **g_kw).detach().tolist()
    with torch.no_grad():
        lam = log_Lambda_G_at_inverse(field, x, method=log_lambda, solver="dopri5", rtol=rtol, atol=atol)
        if log_lambda == "density_ratio":
            log_p = field.log_prob(x, 1.0)
        else:  # change of variables: log p(x) = log phi(F(x)) - log |det J_G(F(x))|
            log_phi = torch.as_tensor(log_standard_normal_density(sq_norm=lam.sq_norm.numpy(), n=n), dtype=x.dtype)
            log_p = log_phi - n * lam.log_Lambda
    out["log_Lambda"] = lam.log_Lambda.tolist()
    out["z_norm2_over_n"] = (lam.sq_norm / n).tolist()
    out["log_p"] = log_p.tolist()
    out["nfe_dopri5"] = int(lam.inversion.nfe)
    out["seconds"] = time.perf_counter() - t0
    return out
