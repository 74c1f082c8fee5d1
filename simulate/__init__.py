"""simulate package."""

from .fields import BoxMixture, FieldValues, Gaussian, GaussianMixture, MixtureField, VelocityField

__all__ = [
    "BoxMixture",
    "FieldValues",
    "Gaussian",
    "GaussianMixture",
    "MixtureField",
    "VelocityField",
]
