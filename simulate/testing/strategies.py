r"""Hypothesis strategies that draw only valid parameters of the paper's results.

Each strategy constructs its values directly inside the valid set (no ``filter``/``assume``, so
no rejection storms): dimensions ``n >= 1``, kernel widths ``sigma > 0``, cube sides
``l >= 0``, thresholds ``tau > 0`` and ``c > 0``, Theorem 4.3's parameters
(:func:`theorem43_params`), Gaussian mixtures and mixtures of Gaussian neighbours with
separated boxes in ``[0, 1]^n`` (Assumptions 4.1-4.4; :class:`simulate.BoxMixture`).

``hypothesis`` is imported when this module is, so ``import simulate`` never needs it.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from simulate.fields import BoxMixture, GaussianMixture

__all__ = [
    "dimensions",
    "sigmas",
    "sides",
    "taus",
    "cs",
    "theorem43_params",
    "box_mixture_params",
    "box_mixtures",
    "gaussian_mixture_params",
    "gaussian_mixtures",
]

DT = torch.float64


def _positive(lo: float, hi: float, name: str) -> st.SearchStrategy[float]:
    if not (0 < lo <= hi):
        raise ValueError(f"{name}: need 0 < min <= max, got {lo!r}, {hi!r}")
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def dimensions(min_n: int = 1, max_n: int = 64) -> st.SearchStrategy[int]:
    """Dimensions ``n`` in ``[min_n, max_n]`` (``min_n >= 1``)."""
    if not (1 <= min_n <= max_n):
        raise ValueError(f"dimensions: need 1 <= min_n <= max_n, got {min_n!r}, {max_n!r}")
    return st.integers(min_n, max_n)


def sigmas(min_sigma: float = 1e-3, max_sigma: float = 1.0) -> st.SearchStrategy[float]:
    """Kernel widths ``sigma`` in ``[min_sigma, max_sigma]`` (``> 0``)."""
    return _positive(min_sigma, max_sigma, "sigmas")


def sides(max_side: float = 1.0) -> st.SearchStrategy[float]:
    """Cube sides ``l`` in ``[0, max_side]`` (``l = 0``: point supports, the Gaussian mixture)."""
    if not max_side >= 0:
        raise ValueError(f"sides: need max_side >= 0, got {max_side!r}")
    return st.floats(0.0, max_side, allow_nan=False, allow_infinity=False)


def taus(min_tau: float = 1e-3, max_tau: float = 1e3) -> st.SearchStrategy[float]:
    """Instability thresholds ``tau`` on ``Lambda_G`` in ``[min_tau, max_tau]`` (``> 0``)."""
    return _positive(min_tau, max_tau, "taus")


def cs(min_c: float = 1e-3, max_c: float = 1e4) -> st.SearchStrategy[float]:
    """Thresholds ``c`` on ``||F(x)||^2`` in ``[min_c, max_c]`` (``> 0``)."""
    return _positive(min_c, max_c, "cs")


@st.composite
def theorem43_params(draw: Any, max_n: int = 512, max_m: int = 16) -> dict[str, Any]:
    """Keyword arguments of :func:`theory.instability_bounds` (Theorem 4.3): all valid.

    ``n``, ``m``, ``sigma``, ``side``, ``tau``, ``c``, ``rho_max > 0`` and ``density_ratio >= 1``.
    """
    return {
        "n": draw(dimensions(1, max_n)),
        "m": draw(st.integers(1, max_m)),
        "sigma": draw(sigmas()),
        "side": draw(sides()),
        "tau": draw(taus()),
        "c": draw(cs(1e-3, 4.0 * max_n)),
        "rho_max": draw(_positive(1e-3, 1e3, "rho_max")),
        "density_ratio": draw(st.floats(1.0, 1e3, allow_nan=False, allow_infinity=False)),
    }


@st.composite
def box_mixture_params(
    draw: Any, n: int | None = None, max_n: int = 8, max_m: int = 4, min_sigma: float = 1e-2, max_sigma: float = 0.3
) -> dict[str, Any]:
    """Parameters of a mixture of Gaussian neighbours ``sum_i w_i U(B_i) * N(0, sigma^2 I)`` (4.3, 4.4).

    The ``m`` boxes are cubes of side ``l`` inside ``[0, 1]^n``, separated along the first axis:
    box ``i`` sits in the slot ``[i/m, (i+1)/m]`` with a gap of at least ``(1/m - l) / 2 > 0``
    between neighbours (``l <= 0.8 / m``). Returns ``lower``, ``upper`` (``(m, n)`` float64),
    ``weights`` (positive, summing to 1), ``sigma`` and ``side``.
    """
    n_val = draw(dimensions(1, max_n)) if n is None else int(n)
    if n_val < 1:
        raise ValueError(f"box_mixture_params: n must be >= 1, got {n!r}")
    m = draw(st.integers(1, max_m))
    w = 1.0 / m
    side = draw(st.floats(0.05, 0.8, allow_nan=False)) * w
    room = w - side
    # jitter within the middle half of each slot's room keeps gaps >= room / 2
    jit = draw(st.lists(st.floats(0.25, 0.75, allow_nan=False), min_size=m, max_size=m))
    rest = draw(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=m * (n_val - 1), max_size=m * (n_val - 1)))
    lower = torch.empty(m, n_val, dtype=DT)
    lower[:, 0] = torch.tensor([i * w + j * room for i, j in enumerate(jit)], dtype=DT)
    if n_val > 1:
        lower[:, 1:] = torch.tensor(rest, dtype=DT).reshape(m, n_val - 1) * (1.0 - side)
    raw = torch.tensor(draw(st.lists(st.floats(0.1, 1.0, allow_nan=False), min_size=m, max_size=m)), dtype=DT)
    return {
        "lower": lower,
        "upper": lower + side,
        "weights": raw / raw.sum(),
        "sigma": draw(sigmas(min_sigma, max_sigma)),
        "side": side,
    }


def box_mixtures(**kwargs: Any) -> st.SearchStrategy[BoxMixture]:
    """:class:`simulate.BoxMixture` fields from :func:`box_mixture_params` (same keyword arguments)."""
    return box_mixture_params(**kwargs).map(
        lambda p: BoxMixture(p["lower"], p["upper"], p["weights"], p["sigma"])
    )


@st.composite
def gaussian_mixture_params(
    draw: Any, n: int | None = None, max_n: int = 8, max_m: int = 4, min_std: float = 0.1, max_std: float = 1.0
) -> dict[str, Any]:
    """Parameters of a Gaussian mixture: ``means`` in ``[-3, 3]^n`` ``(m, n)``, ``stds`` ``(m,)`` in
    ``[min_std, max_std]``, ``weights`` positive summing to 1."""
    n_val = draw(dimensions(1, max_n)) if n is None else int(n)
    if n_val < 1:
        raise ValueError(f"gaussian_mixture_params: n must be >= 1, got {n!r}")
    m = draw(st.integers(1, max_m))
    means = draw(st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=m * n_val, max_size=m * n_val))
    stds = draw(st.lists(_positive(min_std, max_std, "stds"), min_size=m, max_size=m))
    raw = torch.tensor(draw(st.lists(st.floats(0.1, 1.0, allow_nan=False), min_size=m, max_size=m)), dtype=DT)
    return {
        "means": torch.tensor(means, dtype=DT).reshape(m, n_val),
        "stds": torch.tensor(stds, dtype=DT),
        "weights": raw / raw.sum(),
    }


def gaussian_mixtures(**kwargs: Any) -> st.SearchStrategy[GaussianMixture]:
    """:class:`simulate.GaussianMixture` fields from :func:`gaussian_mixture_params`."""
    return gaussian_mixture_params(**kwargs).map(lambda p: GaussianMixture(p["means"], p["stds"], p["weights"]))
