r"""Theorem 3.1 (risk of large reconstruction error), in log space (docs/theory.md §5.1).

Setting: ``v`` is ``L``-Lipschitz in ``x`` for all ``t``; the exact inversion trajectory from
``x(1) = x`` to ``x(0) = z = F(x)`` has ``||x''(t)|| <= M``. Euler inversion with ``N`` steps,
``h = 1/N``, gives ``z~``; exact regeneration gives ``x^ = G(z~)``;
``kappa = sup_{w in [z, z~]} ||J_G(w)||_2``.

1. ``||z~ - z|| <= (h M / (2 L)) (e^L - 1)`` (from the recursion ``e_{k+1} <= (1 + h L) e_k + h^2 M / 2``,
   whose exact solution ``(h M / (2 L))((1 + h L)^N - 1)`` is the sharper discrete bound).
2. ``||x^ - x|| <= kappa ||z~ - z|| <= kappa (h M / (2 L)) (e^L - 1)``.
3. Gronwall: ``kappa <= e^L``, so ``||x^ - x|| <= (h M / (2 L)) e^L (e^L - 1)``.

``e^L`` overflows for ``L > 709``; every bound is returned as a log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from theory._validate import as_int_array, require_nonnegative, require_positive

__all__ = ["Theorem31Bounds", "theorem31_bounds", "Theorem31Check", "check_theorem31", "log_expm1"]


def log_expm1(x: np.ndarray | float) -> np.ndarray:
    """``log(e^x - 1)`` for ``x > 0`` without overflow (``x + log1p(-e^{-x})`` for large ``x``)."""
    x_arr = np.asarray(x, dtype=np.float64)
    big = x_arr > 30.0
    safe_small = np.where(big, 1.0, x_arr)
    safe_big = np.where(big, x_arr, 31.0)
    with np.errstate(divide="ignore"):
        return np.where(big, safe_big + np.log1p(-np.exp(-safe_big)), np.log(np.expm1(safe_small)))


@dataclass(frozen=True)
class Theorem31Bounds:
    """The bounds of Theorem 3.1, as natural logs (``exp`` of them may overflow: use the logs)."""

    log_noise_error: float
    """Part 1: ``log[(h M / (2 L)) (e^L - 1)]`` bounding ``||z~ - z||``."""
    log_noise_error_discrete: float
    """Exact solution of the error recursion: ``log[(h M / (2 L))((1 + h L)^N - 1)]`` (<= part 1)."""
    log_reconstruction_error: float | None
    """Part 2: ``log[kappa (h M / (2 L)) (e^L - 1)]`` bounding ``||x^ - x||`` (None without kappa)."""
    log_gronwall_error: float
    """Part 3: ``log[(h M / (2 L)) e^L (e^L - 1)]`` bounding ``||x^ - x||``."""
    log_kappa_bound: float
    """Gronwall: ``log kappa <= L``."""

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def theorem31_bounds(L: float, M: float, N: int | None = None, h: float | None = None, kappa: float | None = None) -> Theorem31Bounds:
    r"""Evaluate the three bounds of Theorem 3.1 in log space.

    Args:
        L: Lipschitz constant of ``v`` in ``x`` (``L > 0``).
        M: bound on ``||x''(t)||`` along the exact inversion trajectory (``M >= 0``; ``M = 0`` gives
            ``-inf`` logs: Euler is exact on straight trajectories).
        N: number of Euler steps (``h = 1/N``); give ``N`` or ``h``.
        h: step size (``0 < h <= 1``); when given alone, ``N = 1/h`` is used in the discrete bound.
        kappa: ``sup ||J_G||_2`` on the segment ``[z, z~]`` (optional, ``> 0``).

    Raises:
        ValueError: naming the parameter (``L <= 0``, ``M < 0``, ``N < 1``, ``h`` not in (0, 1],
            both or neither of ``N`` and ``h``, ``kappa <= 0``, non-finite values).
    """
    L_val = float(require_positive("L", L))
    M_val = float(require_nonnegative("M", M))
    if (N is None) == (h is None):
        raise ValueError("N or h: give exactly one of the number of steps N and the step size h")
    if N is not None:
        N_val = float(as_int_array("N", N))
        h_val = 1.0 / N_val
    else:
        h_val = float(require_positive("h", h))
        if h_val > 1.0:
            raise ValueError(f"h must lie in (0, 1], got {h!r}")
        N_val = 1.0 / h_val
    with np.errstate(divide="ignore"):
        log_pref = np.log(h_val) + np.log(M_val) - np.log(2.0 * L_val)
    log_em1 = float(log_expm1(L_val))
    log_noise = float(log_pref + log_em1)
    # (1 + hL)^N - 1 = expm1(N log1p(hL))
    log_discrete = float(log_pref + log_expm1(N_val * np.log1p(h_val * L_val)))
    log_recon = None
    if kappa is not None:
        log_recon = float(np.log(float(require_positive("kappa", kappa))) + log_noise)
    return Theorem31Bounds(
        log_noise_error=log_noise,
        log_noise_error_discrete=log_discrete,
        log_reconstruction_error=log_recon,
        log_gronwall_error=float(L_val + log_noise),
        log_kappa_bound=L_val,
    )


@dataclass(frozen=True)
class Theorem31Check:
    """Measured errors against the bounds; ``tightness_* = log(measured / bound)`` (<= 0 when it holds)."""

    bounds: Theorem31Bounds
    noise_error: float
    reconstruction_error: float
    kappa: float | None
    noise_bound_holds: bool
    reconstruction_bound_holds: bool | None
    gronwall_bound_holds: bool
    kappa_bound_holds: bool | None
    amplification_holds: bool | None
    tightness_noise: float
    tightness_reconstruction: float | None
    tightness_gronwall: float

    def as_dict(self) -> dict:
        out = asdict(self)
        out["bounds"] = self.bounds.as_dict()
        return out


def check_theorem31(
    noise_error: float,
    reconstruction_error: float,
    L: float,
    M: float,
    N: int,
    kappa: float | None = None,
    rtol: float = 1e-9,
) -> Theorem31Check:
    """Compare measured ``||z~ - z||`` and ``||x^ - x||`` with the bounds of Theorem 3.1.

    ``rtol`` absorbs floating-point round-off in the measurements (a bound "holds" when
    ``measured <= bound (1 + rtol)``). Also checks ``||x^ - x|| <= kappa ||z~ - z||`` and
    ``kappa <= e^L`` when ``kappa`` is given.
    """
    noise = float(require_nonnegative("noise_error", noise_error))
    recon = float(require_nonnegative("reconstruction_error", reconstruction_error))
    bounds = theorem31_bounds(L, M, N=N, kappa=kappa)
    slack = np.log1p(rtol)
    with np.errstate(divide="ignore"):
        log_noise, log_recon = np.log(noise), np.log(recon)
    t_noise = float(log_noise - bounds.log_noise_error)
    t_gron = float(log_recon - bounds.log_gronwall_error)
    t_recon = None if bounds.log_reconstruction_error is None else float(log_recon - bounds.log_reconstruction_error)
    kappa_val = None if kappa is None else float(kappa)
    return Theorem31Check(
        bounds=bounds,
        noise_error=noise,
        reconstruction_error=recon,
        kappa=kappa_val,
        noise_bound_holds=bool(t_noise <= slack),
        reconstruction_bound_holds=None if t_recon is None else bool(t_recon <= slack),
        gronwall_bound_holds=bool(t_gron <= slack),
        kappa_bound_holds=None if kappa_val is None else bool(np.log(kappa_val) <= bounds.log_kappa_bound + slack),
        amplification_holds=None if kappa_val is None else bool(recon <= kappa_val * noise * (1 + rtol)),
        tightness_noise=t_noise,
        tightness_reconstruction=t_recon,
        tightness_gronwall=t_gron,
    )
