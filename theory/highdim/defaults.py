"""Default parameters of Theorem 4.3's curves and of ``pfode theory bound`` / ``curves``.

No imports: the ``pfode`` parser reads these defaults before anything numeric is loaded.
"""

from __future__ import annotations

__all__ = ["CURVE_DEFAULTS"]

#: Default parameters of the curves (and of ``pfode theory bound``): ``m`` boxes of side ``side``
#: convolved with ``N(0, sigma^2 I)``, threshold ``tau`` on ``Lambda_G``, ``c_n = (1 + eps) n``,
#: ``rho_max`` the density bound of ``p_r`` on ``[0, 1]^n``, ``density_ratio`` the constant K with
#: ``p_r <= K p_g`` (docs/theory.md §8).
CURVE_DEFAULTS: dict[str, float] = {
    "m": 10,
    "sigma": 0.05,
    "side": 0.05,
    "tau": 1.0,
    "eps": 0.1,
    "rho_max": 1.0,
    "density_ratio": 1.0,
}
