"""Exact flow-matching velocity fields of known data laws (docs/theory.md §1.1, §3)."""

from simulate.fields.base import DEFAULT_MAX_MEMORY_BYTES, FieldValues, VelocityField
from simulate.fields._mixture import MixtureField
from simulate.fields.box_mixture import BoxMixture
from simulate.fields.gaussian_mixture import Gaussian, GaussianMixture
from simulate.fields import truncnorm

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
