"""Exact flow-matching velocity fields of known data laws (docs/theory.md §1.1, §3)."""

from .base import DEFAULT_MAX_MEMORY_BYTES, FieldValues, VelocityField
from ._mixture import MixtureField
from .box_mixture import BoxMixture
from .gaussian_mixture import Gaussian, GaussianMixture
from . import truncnorm

__all__ = [
    "DEFAULT_MAX_MEMORY_BYTES",
    "FieldValues",
    "VelocityField",
    "MixtureField",
    "BoxMixture",
    "Gaussian",
    "GaussianMixture",
    "truncnorm",
]
