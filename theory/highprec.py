r"""High-precision (mpmath) references for the log-space numerics of ``theory``.

These are slow, direct evaluations used by the tests and the benchmark to check
``theory.highdim.steiner`` and ``theory.highdim.chi2``; they are not meant for production curves.
"""

from __future__ import annotations

import mpmath as mp

__all__ = ["log_steiner_volume_mp", "log_chi2_sf_mp", "DEFAULT_DPS"]

DEFAULT_DPS = 50


def log_steiner_volume_mp(n: int, side: float, r: float, dps: int = DEFAULT_DPS) -> mp.mpf:
    r"""``log S_n(l, r)`` by direct summation of all ``n + 1`` Steiner terms at ``dps`` digits.

    ``S_n(l, r) = sum_{k=0}^n C(n, k) l^k omega_{n-k} r^{n-k}``,
    ``omega_j = pi^{j/2} / Gamma(j/2 + 1)`` (Steiner formula for the cube, docs/theory.md §8.3).
    """
    with mp.workdps(dps):
        n = int(n)
        l_mp, r_mp = mp.mpf(side), mp.mpf(r)
        log_l = mp.log(l_mp) if l_mp > 0 else None
        log_r = mp.log(r_mp) if r_mp > 0 else None
        log_pi = mp.log(mp.pi)
        lg_n1 = mp.loggamma(n + 1)
        terms = []
        for k in range(n + 1):
            j = n - k
            if (k > 0 and log_l is None) or (j > 0 and log_r is None):
                continue
            term = lg_n1 - mp.loggamma(k + 1) - mp.loggamma(j + 1)
            term += (k * log_l if k else 0) + (j * log_r if j else 0)
            term += mp.mpf(j) / 2 * log_pi - mp.loggamma(mp.mpf(j) / 2 + 1)
            terms.append(term)
        if not terms:
            return mp.mpf("-inf")
        top = max(terms)
        return top + mp.log(mp.fsum(mp.exp(t - top) for t in terms))


def log_chi2_sf_mp(n: int, c: float, dps: int = DEFAULT_DPS) -> mp.mpf:
    """``log P[chi2_n >= c] = log Q(n/2, c/2)`` at ``dps`` digits.

    Uses mpmath's incomplete gamma (``log1p(-P)`` below the mean, so that a ``Q`` close to one
    keeps the relative accuracy of its tiny log); where mpmath's series do not converge
    (parameters near ``x = a`` with ``a`` in the millions) the integral representations
    ``Gamma(a, x) = x^a e^{-x} int_0^inf (1 + u)^{a-1} e^{-x u} du`` and
    ``gamma(a, x) = x^a e^{-x} int_0^1 (1 - u)^{a-1} e^{x u} du`` are integrated by mpmath's
    tanh-sinh quadrature instead.
    """
    with mp.workdps(dps):
        a, x = mp.mpf(n) / 2, mp.mpf(c) / 2
        lower_side = x < a
        try:
            if lower_side:
                log_tail = mp.log(mp.gammainc(a, 0, x, regularized=True))
            else:
                return mp.log(mp.gammainc(a, x, mp.inf, regularized=True))
        except mp.libmp.NoConvergence:
            log_tail = _log_incomplete_gamma_quad(a, x, lower_side)
        if lower_side:
            return mp.log1p(-mp.exp(log_tail))
        return log_tail


def _log_incomplete_gamma_quad(a: mp.mpf, x: mp.mpf, lower: bool) -> mp.mpf:
    """``log P(a, x)`` (``lower``) or ``log Q(a, x)`` by quadrature of the integral representation."""
    if lower:
        exponent = lambda u: (a - 1) * mp.log1p(-u) + x * u  # noqa: E731
        top = mp.mpf(1)
    else:
        exponent = lambda u: (a - 1) * mp.log1p(u) - x * u  # noqa: E731
        top = mp.inf
    scale = 1 / max(abs(x - a + 1), mp.sqrt(a), mp.mpf(1))
    points = [mp.mpf(0)] + [p * scale for p in (1, 4, 16, 64, 256) if p * scale < top] + [top]
    integral = mp.quad(lambda u: mp.exp(exponent(u)), points)
    return a * mp.log(x) - x - mp.loggamma(a) + mp.log(integral)
