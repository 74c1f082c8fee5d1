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

Importing the package imports nothing heavy (no numpy, scipy, sympy, torch): the names in
``__all__`` and the submodules are loaded on first access, so ``pfode --help`` starts fast.
"""

from __future__ import annotations

from theory._lazy import lazy_package

#: public names, each loaded lazily from its module
_EXPORTS: dict[str, str] = {
    "BOUND_KEYS": "highdim.thm43",
    "asymptotic_verdict": "highdim.thm43",
    "c_schedule": "highdim.thm43",
    "check_theorem31": "thm31",
    "clopper_pearson": "thm41",
    "instability_bounds": "highdim.thm43",
    "lemma_d2_log_threshold": "thm41",
    "log_Lambda_density_ratio": "thm41",
    "log_chi2_sf": "highdim.chi2",
    "log_chi2_sf_chernoff": "highdim.chi2",
    "log_p1_bound": "highdim.thm43",
    "log_p2_bound": "highdim.thm43",
    "log_standard_normal_density": "thm41",
    "log_steiner_volume": "highdim.steiner",
    "p1_bound_rate": "highdim.thm43",
    "r_star": "highdim.thm43",
    "r_star_squared": "highdim.thm43",
    "steiner_rate": "highdim.steiner",
    "theorem31_bounds": "thm31",
    "theorem41_from_samples": "thm41",
    "theorem41_lower_bound": "thm41",
}

__all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS)
