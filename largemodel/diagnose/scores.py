r"""Failure scores of an image from the inversion pass alone, and their costs (issue 15).

Notation of docs/theory.md: ``x`` is the latent of a real image (``n = C H W``
coordinates), ``F~`` the numerical inversion on the model's sigma grid ``0 = s_0 < ... < s_N``,
``z~ = F~(x)``, ``G`` the regeneration, ``u(x, sigma)`` the velocity field.

One inversion pass that accumulates the Hutchinson divergence integral
(``largemodel.study.instability.log_lambda_one_pass``, Lemma D.1) gives, at no regeneration:

- ``log_Lambda = (1/n) log |det J_G(z~)|`` (Lemma D.1 with Liouville's formula);
- ``neg_log_p_g_over_n = -(1/n) log p_g(x)``, ``log p_g(x) = log phi(z~) - n log Lambda_G(z~)``;
- ``z_norm2_over_n = ||z~||^2 / n`` (Theorem 4.1's ``p2`` statistic);
- from the velocities ``u_i = u(x_i, s_i)`` the solver evaluates along the inversion:
  ``velocity_rms = (1/N) sum_i ||u_i|| / sqrt(n)``, ``velocity_growth = log(||u_{N-1}|| / ||u_0||)``
  and ``velocity_change = sum_i |s_{i+1} - s_i| ||u_{i+1} - u_i|| / sqrt(n)``. The last one is the
  first-order mismatch of the naive inversion: Euler inverts with ``u_i`` the step that Euler
  generation takes with ``u_{i+1}``, so the round trip's local errors are
  ``h_i (u_{i+1} - u_i) + O(h_i^2)`` (the per-step term of Theorem 3.1's bound before
  propagation by ``J_G``).

Every score is oriented so that larger means "predicted to reconstruct worse".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from largemodel.models.routes import check_route, resolve_route
from largemodel.study import instability as ins
from largemodel.study.instability import Generators, log_lambda_one_pass
from largemodel.study.ode import SOLVERS, Velocity, generate, invert, nfe_per_map
from largemodel.study.items import image_generators  # the study's seeding rule, re-exported
from largemodel.diagnose.score_names import INVERSION_SCORES, ONE_PASS_SCORES, REGENERATION_SCORES  # re-exported

__all__ = [
    "INVERSION_SCORES", "ONE_PASS_SCORES", "REGENERATION_SCORES", "ScoreConfig", "available_scores", "one_pass_scores",
    "score_costs", "image_generators", "score_group",
]

@dataclass(frozen=True)
class ScoreConfig:
    """Parameters of the one-pass scores.

    Attributes:
        steps: ODE steps of the inversion (and of a reconstruction).
        solver: a solver of ``largemodel.study.ode.SOLVERS``.
        probes: Rademacher probes per evaluation of the Hutchinson divergence.
        seed: seeds the probes (as ``StudyConfig.seed`` does in the study).
        jacobian_route: ``auto``, ``math-jvp`` or ``vjp-fd``: Hutchinson's probes by forward-mode AD
            (math attention) or by one VJP each (fused kernels); ``auto`` = vjp-fd on CUDA.
        divergence: accumulate the divergence integral (``log_Lambda``, ``neg_log_p_g_over_n``);
            ``False``: a plain inversion, only the scores in ``INVERSION_SCORES`` (no extra cost
            over the inversion a user runs anyway).
    """

    steps: int = 100
    solver: str = "euler"
    probes: int = 1
    seed: int = 0
    divergence: bool = True
    jacobian_route: str = "auto"

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"--steps must be a positive integer, got {self.steps!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"--solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if int(self.probes) != self.probes or self.probes < 1:
            raise ValueError(f"--probes must be a positive integer, got {self.probes!r}")
        check_route(self.jacobian_route)

    def signature_params(self) -> dict[str, Any]:
        """The parameters that change a record (``jacobian_route`` only when not ``auto``: the records made
        before it existed stay valid)."""
        d = dict(self.__dict__)
        if d["jacobian_route"] == "auto":
            d.pop("jacobian_route")
        return d


class _VelocityRecorder:
    """Wraps ``u`` to record, per inversion step, ``||u_i||`` and ``||u_i - u_{i-1}||`` of each sample.

    ``log_lambda_one_pass`` calls ``u`` inside ``torch.func.jvp`` on ``B * probes`` rows (each
    sample repeated on consecutive rows); the primal output is detached and the first row of each
    sample kept. The on-path evaluation at ``s_i`` is the last call at that sigma (Heun calls its
    predictor at ``s_{i+1}`` first, then the next step at ``s_{i+1}`` on the path); a call at the
    top of the grid ``s_N`` is only ever a predictor and is dropped.
    """

    def __init__(self, velocity: Velocity, batch: int, top: float) -> None:
        self.velocity = velocity
        self.batch = batch
        self.top = top
        self.norms: list[Tensor] = []
        self.changes: list[Tensor] = []
        self._pending: tuple[float, Tensor] | None = None
        self._previous: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        out = self.velocity(x, sigma)
        s = float(sigma)
        if self._pending is not None and self._pending[0] != s:
            self._finalize()
        rows = out.detach()
        self._pending = (s, rows.reshape(self.batch, rows.shape[0] // self.batch, -1)[:, 0].to(torch.float64))
        return out

    def _finalize(self) -> None:
        assert self._pending is not None
        s, u = self._pending
        self._pending = None
        if s == self.top:
            return
        self.norms.append(u.norm(dim=1))
        if self._previous is not None:
            self.changes.append((u - self._previous).norm(dim=1))
        self._previous = u

    def close(self) -> None:
        if self._pending is not None:
            self._finalize()
        self._previous = None


def available_scores(cfg: ScoreConfig) -> tuple[str, ...]:
    """The scores ``one_pass_scores`` gives under ``cfg`` (in ``ONE_PASS_SCORES`` order)."""
    return ONE_PASS_SCORES if cfg.divergence else tuple(k for k in ONE_PASS_SCORES if k in INVERSION_SCORES)


@torch.no_grad()
def one_pass_scores(
    velocity: Velocity, x: Tensor, sigmas: Tensor, cfg: ScoreConfig, generator: Generators
) -> dict[str, Any]:
    r"""All one-pass scores of a batch of latents ``x`` ``(B, C, H, W)`` from one inversion pass.

    Lemma D.1 (``log_lambda_one_pass``) gives ``log Lambda_G(z~)`` and ``log p_g(x)``; the
    velocity scores are read off the same pass (module docstring). The probes come from
    ``generator`` exactly as in ``largemodel.study.runner`` (so equal seeds give the study's values).

    Returns:
        ``z`` (the inverted noise) and each name of ``available_scores(cfg)`` as a ``(B,)``
        float64 tensor, plus ``velocity_norms`` ``(B, N)`` and (with the divergence) ``log_p_g``.
    """
    b, n = x.shape[0], x[0].numel()
    rec = _VelocityRecorder(velocity, b, float(torch.as_tensor(sigmas, dtype=torch.float64).max()))
    if cfg.divergence:
        one = log_lambda_one_pass(rec, x, sigmas, solver=cfg.solver, probes=cfg.probes, generator=generator,
                                  route=resolve_route(cfg.jacobian_route, x.device.type))
    else:
        z = invert(rec, x, sigmas, solver=cfg.solver)
        zf = z.flatten(1).to(torch.float64)
        one = {"z": z, "z_norm2_over_n": (zf * zf).sum(1) / n}
    rec.close()
    norms = torch.stack([t.clone() for t in rec.norms], dim=1)  # (B, N)
    steps = torch.as_tensor(sigmas, dtype=torch.float64).flip(0).diff().abs().to(norms.device)
    change = torch.stack([t.clone() for t in rec.changes], dim=1) if rec.changes else norms[:, :0]
    out: dict[str, Any] = {
        "z": one["z"],
        "z_norm2_over_n": one["z_norm2_over_n"],
        "velocity_norms": norms,
        "velocity_rms": norms.mean(1) / math.sqrt(n),
        "velocity_growth": torch.log(norms[:, -1].clamp_min(1e-300)) - torch.log(norms[:, 0].clamp_min(1e-300)),
        "velocity_change": (change * steps[: change.shape[1]]).sum(1) / math.sqrt(n),
    }
    if cfg.divergence:
        out.update(log_Lambda=one["log_Lambda"], log_p_g=one["log_p_g"], neg_log_p_g_over_n=-one["log_p_g"] / n)
    for key in available_scores(cfg):
        if not bool(torch.isfinite(out[key]).all()):
            raise FloatingPointError(f"one-pass score {key} is not finite (the inversion diverged?)")
    return out


def score_costs(steps: int, solver: str, probes: int, *, perturbations: int = 8, jvp_directions: int = 1,
                power_iters: int = 10) -> dict[str, dict[str, float]]:
    r"""Cost of each score in network evaluations, and relative to one reconstruction.

    One reconstruction (invert, then regenerate) is ``2 M`` evaluations, ``M = nfe_per_map``
    (``N`` Euler, ``2N`` Heun). A forward-mode JVP row is counted as ``c = 3`` evaluations
    (primal plus tangent, about what forward AD costs); the suite also reports measured seconds.

    - ``z_norm2_over_n``, velocity scores from a plain inversion: ``M`` (the inversion the user
      runs anyway: 0 extra);
    - ``log_Lambda``, ``neg_log_p_g_over_n`` (Hutchinson, ``P`` probes, Lemma D.1): ``c P M``
      in place of the inversion (the velocity scores come with it);
    - ``mu_bar``: the reconstruction plus ``K`` perturbed regenerations, ``M (2 + K)``;
    - ``lambda_jvp``: the inversion plus a JVP through ``G`` per direction, ``M (1 + c J)``;
    - ``spectral_norm``: power iteration, a JVP and a VJP through ``G`` per iteration,
      ``M (1 + 2 c I)``.
    """
    base = float(nfe_per_map(solver, steps))
    c = 3.0
    evals = {
        "z_norm2_over_n": base,
        "velocity_rms": base,
        "velocity_growth": base,
        "velocity_change": base,
        "log_Lambda": c * probes * base,
        "neg_log_p_g_over_n": c * probes * base,
        "mu_bar": base * (2 + perturbations),
        "lambda_jvp": base * (1 + c * jvp_directions),
        "spectral_norm": base * (1 + 2 * c * power_iters),
    }
    return {k: {"evaluations": v, "per_reconstruction": v / (2 * base)} for k, v in evals.items()}


def _mse01(a: Tensor, b: Tensor) -> Tensor:
    return (((a - b) / 2.0).to(torch.float64) ** 2).flatten(1).mean(1)


@torch.no_grad()
def score_group(
    model: Any,
    images: Tensor,
    cfg: ScoreConfig,
    generator: Generators,
    *,
    reconstruct: bool = False,
    perturbations: int = 0,
    eps_rms: float = 1e-2,
    jvp_directions: int = 0,
    power_iters: int = 0,
    batch_size: int = 256,
) -> tuple[list[dict[str, Any]], Tensor | None]:
    r"""Score a group of images ``(B, C, R, R)`` in ``[-1, 1]``; one record per image.

    The one-pass scores always (``one_pass_scores``); with ``reconstruct`` (implied by any
    regeneration score) also ``x^ = G(z~)`` and the errors ``mse_latent`` ``||x^ - x||^2 / n`` and
    ``mse_pixel`` (decoded, ``[0, 1]`` scale); then, drawing from ``generator`` in the study's order
    (probes, perturbations, JVP directions, power iteration) so that equal seeds give the study's
    values: ``mu_bar`` (App. E, ``K = perturbations``), ``lambda_jvp`` (Def. 2.2) and
    ``spectral_norm`` (``||J_G(z~)||_2``).

    Returns:
        ``(records, decoded reconstructions or None)``.
    """
    vel = model.velocity
    x = model.encode(images)
    sigmas = model.sigmas(cfg.steps)
    one = one_pass_scores(vel, x, sigmas, cfg, generator)
    z = one["z"]
    b = x.shape[0]
    cols: dict[str, Any] = {k: one[k].tolist() for k in (*available_scores(cfg), "log_p_g") if k in one}
    cols["velocity_norms"] = one["velocity_norms"].tolist()
    recon = None
    if reconstruct or perturbations or jvp_directions or power_iters:
        run = lambda y: generate(vel, y, sigmas, solver=cfg.solver)  # noqa: E731
        xr = torch.cat([run(z[i : i + batch_size]) for i in range(0, b, batch_size)])
        cols["mse_latent"] = ((xr - x).flatten(1).to(torch.float64) ** 2).mean(1).tolist()
        recon = model.decode(xr)
        cols["mse_pixel"] = _mse01(recon, images.to(recon.device, recon.dtype)).tolist()
        if perturbations:
            mu = ins.averaged_instability(vel, z, sigmas, solver=cfg.solver, num_perturbations=perturbations, eps_rms=eps_rms,
                                          generator=generator, gz=xr, batch_size=batch_size)
            cols["mu_bar"] = mu.mean(1).tolist()
        if jvp_directions:
            dirs = ins.unit_directions((b * jvp_directions, *z.shape[1:]), generator, z)
            lam = ins.jvp_lambda(vel, z, sigmas, dirs.view(b, jvp_directions, *z.shape[1:]), solver=cfg.solver)
            cols["lambda_jvp"] = lam.mean(1).tolist()
        if power_iters:
            with torch.enable_grad():
                sn = ins.spectral_norm_G(vel, z, sigmas, solver=cfg.solver, iters=power_iters, generator=generator).value
            cols["spectral_norm"] = sn.tolist()
        recon = recon.cpu()
    cols["n"] = [x[0].numel()] * b
    return [{k: v[i] for k, v in cols.items()} for i in range(b)], recon
