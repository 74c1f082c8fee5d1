r"""Independent references shared by the experiments: seeded generators, test fields, grids, Jacobians.

Used by lemma-d1, prop21, thm31 and thm41 (and the public :mod:`simulate.testing`):

* :func:`seeded_generator` -- a torch generator seeded from integers (seed, n, a stream number);
* :func:`paper_gmm_2d`, :func:`build_field` -- the test fields (docs/theory.md §3.3-§3.5);
* :func:`graded_grid` -- a time grid refined towards ``t = 1`` for fixed-step RK4 (§4.1);
* :func:`fd_jacobian` (central differences), :func:`ad_jacobian` (reverse-mode AD of a batched
  map) and :func:`velocity_jacobian` (``v`` and ``J_v`` by AD): Jacobians by methods independent
  of the quantities they check (§9.3).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from simulate.fields import BoxMixture, Gaussian, GaussianMixture

__all__ = ["DT", "seeded_generator", "paper_gmm_2d", "build_field", "graded_grid", "fd_jacobian", "ad_jacobian",
           "velocity_jacobian"]

DT = torch.float64
_CHUNK = 8192


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch generator seeded deterministically from integers (e.g. seed, n, stream), by an FNV-1a style hash."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFF)) * 1099511628211) % (1 << 63)
    return torch.Generator().manual_seed(h)


def paper_gmm_2d() -> GaussianMixture:
    """The 2-D three-component Gaussian mixture used for the Fig. 3 / Fig. 4 style experiments."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=DT)
    return GaussianMixture(means, 0.3, torch.tensor([0.3, 0.3, 0.4], dtype=DT))


def build_field(kind: str, n: int, seed: int = 0, *, gaussian_std: float = 0.3, box_sigma: float = 0.05,
                box_side: float = 0.2, m: int = 4) -> Any:
    """A field of ``kind`` in dimension ``n`` (deterministic in ``seed``).

    * ``"gmm"``: n = 2: :func:`paper_gmm_2d`; otherwise ``m`` equal-weight components with means
      ``N(0, I_n)`` and common std 0.3;
    * ``"box"``: ``m`` equal-weight boxes of side ``box_side`` with lower corners uniform in
      ``[0, 1 - box_side]^n`` (so every box lies in ``[0, 1]^n``), kernel ``sigma = box_sigma``;
    * ``"gaussian"``: the single Gaussian ``N(0.5 * 1, gaussian_std^2 I)`` (closed forms,
      docs/theory.md §3.4: ``G(z) = mu + s z``, ``Lambda = s``).
    """
    if kind == "gmm":
        if n == 2:
            return paper_gmm_2d()
        g = seeded_generator(seed, n, 1)
        means = torch.randn(m, n, generator=g, dtype=DT)
        return GaussianMixture(means, 0.3, torch.full((m,), 1.0 / m, dtype=DT))
    if kind == "box":
        g = seeded_generator(seed, n, 2)
        lower = torch.rand(m, n, generator=g, dtype=DT) * (1.0 - box_side)
        return BoxMixture(lower, lower + box_side, torch.full((m,), 1.0 / m, dtype=DT), box_sigma)
    if kind == "gaussian":
        return Gaussian(torch.full((n,), 0.5, dtype=DT), float(gaussian_std))
    raise ValueError(f"field kind must be one of gmm, box, gaussian, got {kind!r}")


def graded_grid(steps: int, power: float = 2.0) -> Tensor:
    """Time grid ``t_k = 1 - (1 - k / steps)^power`` from 0 to 1, refined towards ``t = 1``
    (where the mixtures' flows bend most: the kernel ``sigma`` is small)."""
    u = torch.linspace(0.0, 1.0, int(steps) + 1, dtype=DT)
    ts = 1.0 - (1.0 - u) ** float(power)
    ts[0], ts[-1] = 0.0, 1.0
    return ts


def fd_jacobian(fn: Callable[[Tensor], Tensor], z: Tensor, h: float = 1e-5) -> Tensor:
    """Jacobian of a row-wise map by central differences, all ``2 n`` perturbations in one batch.

    Returns ``J`` of shape ``(B, n_out, n)`` with ``J[b, :, j] = (fn(z_b + h e_j) - fn(z_b - h e_j)) / (2 h)``.
    """
    B, n = z.shape
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    pts = torch.cat([(z[:, None, :] + h * eye).reshape(B * n, n), (z[:, None, :] - h * eye).reshape(B * n, n)])
    with torch.no_grad():
        out = fn(pts)
    plus, minus = out[: B * n].reshape(B, n, -1), out[B * n :].reshape(B, n, -1)
    return ((plus - minus) / (2.0 * h)).transpose(1, 2)


def ad_jacobian(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Jacobian ``(B, n_out, n)`` of a row-wise map by reverse-mode AD (one backward pass per output)."""
    with torch.enable_grad():
        zz = z.detach().clone().requires_grad_(True)
        y = fn(zz)
        rows = [torch.autograd.grad(y[:, d].sum(), zz, retain_graph=d < y.shape[1] - 1)[0] for d in range(y.shape[1])]
    return torch.stack(rows, 1).detach()


def velocity_jacobian(field: Any, X: Tensor, T: Tensor) -> tuple[Tensor, Tensor]:
    """``(v(X, T), J_v(X, T))`` per row by reverse-mode autograd, chunked; shapes ``(R, n)``, ``(R, n, n)``."""
    vs, js = [], []
    n = X.shape[1]
    for r0 in range(0, X.shape[0], _CHUNK):
        with torch.enable_grad():
            xx = X[r0 : r0 + _CHUNK].detach().clone().requires_grad_(True)
            v = field.velocity(xx, T[r0 : r0 + _CHUNK])
            rows = [torch.autograd.grad(v[:, d].sum(), xx, retain_graph=d < n - 1)[0] for d in range(n)]
        vs.append(v.detach())
        js.append(torch.stack(rows, 1).detach())
    return torch.cat(vs), torch.cat(js)
