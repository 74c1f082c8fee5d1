r"""How Jacobian products of a large model are computed (``--jacobian-route``), without torch.

docs/theory.md §10.6. Two routes to ``J v`` / ``J^T w`` / ``div u``:

* ``math-jvp``: forward-mode AD (``torch.func.jvp``) under PyTorch's math attention kernel, the only
  kernel with forward AD (the fused flash / memory-efficient kernels raise ``NotImplementedError``);
* ``vjp-fd``: every network call on the default (fused) kernels: the Hutchinson divergence
  ``e^T J_u e`` as ``e^T (J_u^T e)`` by one reverse-mode VJP; power iteration's ``J_G v`` by
  finite differences of the velocity along the regeneration's own trajectory (``--fd-scheme``:
  ``forward``, one row per evaluation, or ``central``, two) and ``J_G^T w`` by reverse mode.

``auto`` is ``vjp-fd`` on CUDA (where the fused kernels are what makes a step fast) and
``math-jvp`` elsewhere (on the CPU the math kernel costs nothing extra and forward AD is exact).
This module imports nothing heavy so that the command-line parsers can name the choices.
"""

from __future__ import annotations

__all__ = ["JACOBIAN_ROUTES", "FD_SCHEMES", "DEFAULT_FD_SCHEME", "check_route", "check_fd_scheme", "resolve_route",
           "fd_step_rms", "UNIT_ROUNDOFF"]

#: the values of ``--jacobian-route``
JACOBIAN_ROUTES: tuple[str, ...] = ("auto", "math-jvp", "vjp-fd")
#: the values of ``--fd-scheme`` (route ``vjp-fd``'s ``J_u t`` by differences), the default first
FD_SCHEMES: tuple[str, ...] = ("forward", "central")
#: one row per evaluation instead of two; its error in bf16 (a few %, docs/theory.md §10.6) is of the
#: order of power iteration's own at 10 iterations
DEFAULT_FD_SCHEME = FD_SCHEMES[0]

#: unit roundoff ``u = 2^-p`` (p = significand bits incl. the implicit one) of each network dtype
UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53, "float32": 2.0**-24, "bfloat16": 2.0**-8, "float16": 2.0**-11,
}


def check_route(route: str, flag: str = "--jacobian-route") -> str:
    """``route`` if it is one of ``JACOBIAN_ROUTES``, else ``ValueError`` naming ``flag``."""
    if route not in JACOBIAN_ROUTES:
        raise ValueError(f"{flag} must be one of {', '.join(JACOBIAN_ROUTES)}, got {route!r}")
    return route


def check_fd_scheme(scheme: str, flag: str = "--fd-scheme") -> str:
    """``scheme`` if it is one of ``FD_SCHEMES``, else ``ValueError`` naming ``flag``."""
    if scheme not in FD_SCHEMES:
        raise ValueError(f"{flag} must be one of {', '.join(FD_SCHEMES)}, got {scheme!r}")
    return scheme


def resolve_route(route: str, device_type: str) -> str:
    """The route ``auto`` stands for on a device of type ``device_type`` (``"cuda"``, ``"cpu"``...)."""
    check_route(route)
    if route != "auto":
        return route
    return "vjp-fd" if device_type == "cuda" else "math-jvp"


def fd_step_rms(dtype_name: str, scheme: str = DEFAULT_FD_SCHEME) -> float:
    r"""RMS step per coordinate ``h_rms`` of the finite differences of the velocity (docs/theory.md §10.6).

    ``scheme="central"``: the error of ``(u(x + h t) - u(x - h t)) / 2h`` relative to ``J_u t`` is
    ``C h_rms^2`` (truncation, ``C = |u'''| / 6 |J_u|``) plus ``r / h_rms`` (rounding of the two
    evaluations, ``r ~ u_dtype``), minimal at ``h_rms = (r / 2C)^(1/3)``. Measured on the tiny
    SD3 / FLUX models along their top singular direction (where the curvature is largest): ``C ~ 8``
    and ``r ~ 0.25-0.5 u``, so ``h_rms = (u / 64)^(1/3) = u^(1/3) / 4``: ``9.8e-4`` in fp32,
    ``1.2e-6`` in fp64, ``0.039`` in bf16, ``0.020`` in fp16.

    ``scheme="forward"``: the error of ``(u(x + h t) - u(x)) / h`` is ``C_1 h_rms`` (truncation,
    ``C_1 = |u''| / 2 |J_u|``) plus ``r / h_rms``, minimal at ``h_rms = (r / C_1)^(1/2)``. Measured
    on the same models (2026-12-08, ``J_G v`` through 6 Euler steps): ``C_1 = 0.9`` (SD3) and ``1.8``
    (FLUX) along the top singular direction (0.15 / 0.4 along a random one) and ``r ~ 0.2-0.7 u``,
    so ``h_rms = (u / 4)^(1/2) = u^(1/2) / 2``: ``1.2e-4`` in fp32, ``5.3e-9`` in fp64, ``0.031`` in
    bf16, ``0.011`` in fp16.

    ``u`` is the unit roundoff of the network's dtype; the step's norm is ``h = h_rms sqrt(n)``
    along a unit direction.
    """
    name = str(dtype_name).removeprefix("torch.")
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"no finite-difference step for dtype {dtype_name!r}; one of {sorted(UNIT_ROUNDOFF)}")
    if check_fd_scheme(scheme) == "forward":
        return (UNIT_ROUNDOFF[name] / 4.0) ** 0.5
    return (UNIT_ROUNDOFF[name] / 64.0) ** (1.0 / 3.0)
