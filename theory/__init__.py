"""The paper's definitions and theorems, symbolically (sympy), in log space (numpy/scipy) and at
high precision (mpmath).

Modules, one result each: :mod:`theory.coefficients` (Definitions 2.2, 4.1),
:mod:`theory.power_iteration` and :mod:`theory.estimators` (the estimators of §2 and §9, shared by
``simulate`` and ``largemodel``), :mod:`theory.jacobian` (full Jacobians, reverse or forward mode, in
chunks), :mod:`theory.perturbation_scales` (Proposition 2.1's scales and ``mu`` along a direction),
:mod:`theory.prop21` (Proposition 2.1), :mod:`theory.thm31` (Theorem 3.1),
:mod:`theory.thm41` (Lemmas D.1, D.2, Theorem 4.1), :mod:`theory.highdim.steiner` (Steiner formula),
:mod:`theory.highdim.chi2` (chi-square tails), :mod:`theory.highdim.thm43` (Theorem 4.3),
:mod:`theory.symbolic.derivations` and :mod:`theory.symbolic.instability` (sympy derivations), :mod:`theory.highprec` (mpmath references),
:mod:`theory.highdim.curves` (bounds over n). Output, shared by every package:
:mod:`theory.figures` (PNG), :mod:`theory.output.files` (what pfode writes: folder claims,
manifests, no link followed) and :mod:`theory.output.removal` (what it deletes).
"""

from theory.highdim.chi2 import log_chi2_sf, log_chi2_sf_chernoff
from theory.highdim.steiner import log_steiner_volume, steiner_rate
from theory.thm31 import check_theorem31, theorem31_bounds
from theory.thm41 import (
    clopper_pearson,
    lemma_d2_log_threshold,
    log_Lambda_density_ratio,
    log_standard_normal_density,
    theorem41_from_samples,
    theorem41_lower_bound,
)
from theory.highdim.thm43 import (
    BOUND_KEYS,
    asymptotic_verdict,
    c_schedule,
    instability_bounds,
    log_p1_bound,
    log_p2_bound,
    p1_bound_rate,
    r_star,
    r_star_squared,
)

__all__ = [
    "BOUND_KEYS",
    "asymptotic_verdict",
    "c_schedule",
    "check_theorem31",
    "clopper_pearson",
    "instability_bounds",
    "lemma_d2_log_threshold",
    "log_Lambda_density_ratio",
    "log_chi2_sf",
    "log_chi2_sf_chernoff",
    "log_p1_bound",
    "log_p2_bound",
    "log_standard_normal_density",
    "log_steiner_volume",
    "p1_bound_rate",
    "r_star",
    "r_star_squared",
    "steiner_rate",
    "theorem31_bounds",
    "theorem41_from_samples",
    "theorem41_lower_bound",
]
