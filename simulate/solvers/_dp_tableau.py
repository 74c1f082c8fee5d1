"""The Dormand--Prince 5(4) tableau and the two vector kernels of :mod:`simulate.solvers.dopri5`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Butcher tableau (Dormand & Prince 1980; Hairer, Norsett & Wanner, Table II.5.2).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B = _DP_A[6]  # 5th-order weights (= last row: FSAL)
# e_j = b_j - b*_j with the embedded 4th-order weights
# b* = (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40).
_DP_E = (
    71 / 57600,
    0.0,
    -71 / 16695,
    71 / 1920,
    -17253 / 339200,
    22 / 525,
    -1 / 40,
)
_SAFETY = 0.9
_FAC_MIN = 0.2
_FAC_MAX = 10.0
_ERR_EXPONENT = -1.0 / 5.0  # -1 / (q + 1), q = 4: order of the embedded error estimate


def _lincomb(coeffs: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``sum_j coeffs[j] * ks[j]`` skipping zero coefficients, accumulated in place in one fresh
    tensor (one pass per term, no temporaries; differentiable: the buffer is an output of the
    first product, and ``add_`` needs no saved values)."""
    out: Tensor | None = None
    for c, k in zip(coeffs, ks):
        if c == 0.0:
            continue
        if out is None:
            out = c * k
        else:
            out.add_(k, alpha=c)
    assert out is not None
    return out


def _rms_rows(a: Tensor, extra: Tensor | None) -> Tensor:
    """Per-row RMS of ``a`` (B, n), with an optional extra component ``extra`` (B,).

    ``||a_row||_2 / sqrt(m)`` (one pass over ``a``), with ``hypot`` for the extra component."""
    norm = torch.linalg.vector_norm(a, dim=1)
    m = a.shape[1]
    if extra is not None:
        norm = torch.hypot(norm, extra)
        m += 1
    return norm * (1.0 / math.sqrt(m))
