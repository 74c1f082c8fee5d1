"""The study's parameters: one frozen, validated config (``pfode largemodel study`` flags map to its fields)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from theory._validate import require_ints

from largemodel.models.flow_model import JVP_REDUCTIONS
from largemodel.models.routes import DEFAULT_FD_SCHEME, check_fd_scheme, check_route

__all__ = ["PERTURBATION_RMS_MIN", "StudyConfig", "check_perturbation_size"]

#: smallest RMS perturbation size per coordinate (``--eps-rms``, ``explain --sizes``). The regenerations run
#: in a float32 state (unit roundoff 6e-8, coordinates of size ~1), so their rounding adds about
#: ``1e-7 / eps_rms`` to a measured amplification ``||G(z + D) - G(z)|| / ||D||``: ~1% at 1e-5, and
#: the quotient is rounding noise below (``--eps-rms 1e-300`` gave mu_bar ~ 2e292).
PERTURBATION_RMS_MIN = 1e-5


def check_perturbation_size(value: float, flag: str) -> float:
    """``value`` if it is a finite perturbation size in ``[PERTURBATION_RMS_MIN, 10]``, else ``ValueError`` naming ``flag``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and PERTURBATION_RMS_MIN <= value <= 10):
        raise ValueError(f"{flag} must be in [{PERTURBATION_RMS_MIN:g}, 10] (below, float32 rounding of the "
                         f"regenerations swamps the perturbation), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class StudyConfig:
    """Parameters of a study; those that change results form the resume signature.

    Attributes:
        steps: ODE steps for inversion and for regeneration (paper: 500; App. F: 100).
        solver: ``"euler"`` (paper default), ``"heun"`` (App. B.1; Heun on every step) or
            ``"heun-diffusers"`` (diffusers' ``FlowMatchHeunDiscreteScheduler``: Euler on the last
            step, ``2N - 1`` evaluations).
        perturbations: ``K`` for the paper's ``mu_bar`` (0 disables it).
        eps_rms: RMS size of a perturbation per latent coordinate (``||D|| = eps_rms sqrt(n)``).
        jvp_directions: random directions for ``lambda_G`` (0 disables).
        lambda_method: how ``lambda_G`` is computed: ``"jvp"`` (forward-mode AD, math attention),
            ``"fd"`` (central differences with step ``eps_rms sqrt(n)``, rows batched with the
            ``mu_bar`` rows) or ``"auto"`` (fd on CUDA, jvp elsewhere; the record says which).
        jvp_reductions: ``"fp32"`` or ``"reduced"``: how the math attention kernel of every JVP
            (lambda by jvp, power iteration, Hutchinson) reduces a bf16 / fp16 model's attention
            (:func:`largemodel.models.flow_model.jvp_reductions`; no effect in fp32).
        power_iters: power iterations for ``||J_G||_2`` (0 disables).
        jacobian_route: how power iteration's ``J v`` and Hutchinson's ``e^T J e`` are computed
            (``largemodel.models.routes``): ``"math-jvp"`` (forward-mode AD, math attention),
            ``"vjp-fd"`` (finite differences and VJPs on the fused kernels) or ``"auto"`` (vjp-fd
            on CUDA, math-jvp elsewhere; the record says which).
        fd_scheme: route ``vjp-fd``'s ``J_u t`` in power iteration: ``"forward"`` (the default; one
            network row per evaluation, the base value the velocity recorded on the trajectory) or
            ``"central"`` (two rows, a smaller error; docs/theory.md §10.6).
        log_lambda: ``"none"``, ``"hutchinson"`` or ``"exact"`` (exact: small ``n`` only).
        probes: Hutchinson probes per evaluation.
        batch_size: rows per transformer call (perturbed regenerations are grouped).
        images_per_batch: images inverted and regenerated together.
        seed: seeds the image subset, the perturbations and the probes.
    """

    steps: int = 500
    solver: str = "euler"
    perturbations: int = 8
    eps_rms: float = 1e-2
    jvp_directions: int = 1
    power_iters: int = 0
    jacobian_route: str = "auto"
    fd_scheme: str = DEFAULT_FD_SCHEME
    log_lambda: str = "none"
    lambda_method: str = "auto"
    jvp_reductions: str = "fp32"
    probes: int = 1
    batch_size: int = 16
    images_per_batch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        require_ints(self, ("steps", "probes", "batch_size", "images_per_batch"))
        require_ints(self, ("perturbations", "jvp_directions", "power_iters"), minimum=0)
        if self.solver not in ("euler", "heun", "heun-diffusers"):
            raise ValueError(f"solver must be 'euler', 'heun' or 'heun-diffusers', got {self.solver!r}")
        if self.jvp_reductions not in JVP_REDUCTIONS:
            raise ValueError(f"--jvp-reductions must be one of {', '.join(JVP_REDUCTIONS)}, got {self.jvp_reductions!r}")
        if self.lambda_method not in ("auto", "jvp", "fd"):
            raise ValueError(f"--lambda-method must be 'auto', 'jvp' or 'fd', got {self.lambda_method!r}")
        check_perturbation_size(self.eps_rms, "--eps-rms")
        check_route(self.jacobian_route)
        check_fd_scheme(self.fd_scheme)
        if self.log_lambda not in ("none", "hutchinson", "exact"):
            raise ValueError(f"log_lambda must be 'none', 'hutchinson' or 'exact', got {self.log_lambda!r}")

    def signature_params(self) -> dict[str, Any]:
        """The parameters that change a record (batching does not)."""
        d = asdict(self)
        d.pop("batch_size")
        d.pop("images_per_batch")
        if d["jvp_reductions"] == "fp32":  # the default: records made before the option existed stay valid
            d.pop("jvp_reductions")
        if self.power_iters == 0 or self.jacobian_route == "math-jvp":  # no J v by differences
            d.pop("fd_scheme")
        if d["jacobian_route"] == "auto":  # the record names the route it resolved to
            d.pop("jacobian_route")
        return d
