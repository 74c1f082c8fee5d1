"""Exact flow-matching fields, batched ODE solvers, the maps G, F and reconstruction, and
instability estimators: the simulator the suite checks the paper against (docs/theory.md §1-§4, §6.1)."""

from simulate.fields import BoxMixture, FieldValues, Gaussian, GaussianMixture, MixtureField, VelocityField
from simulate.instability import (
    averaged_instability,
    generation_map,
    lambda_G,
    log_Lambda_G,
    log_Lambda_G_at_inverse,
    spectral_norm_G,
)
from simulate.inversion import invert_fixed_point
from simulate.maps import Reconstruction, generate, invert, reconstruct
from simulate.solvers import SolveResult, dopri5, euler, heun, rk4, time_grid

__all__ = [
    "BoxMixture",
    "FieldValues",
    "Gaussian",
    "GaussianMixture",
    "MixtureField",
    "Reconstruction",
    "SolveResult",
    "VelocityField",
    "averaged_instability",
    "dopri5",
    "euler",
    "generate",
    "generation_map",
    "heun",
    "invert",
    "invert_fixed_point",
    "lambda_G",
    "log_Lambda_G",
    "log_Lambda_G_at_inverse",
    "reconstruct",
    "rk4",
    "spectral_norm_G",
    "time_grid",
]
