"""The names of the failure scores (``largemodel.diagnose.scores`` computes them), without torch.

The command line (``largemodel.diagnose.args``) lists them in ``--help`` without importing the
scores' module.
"""

from __future__ import annotations

__all__ = ["DEFAULT_RISK", "INVERSION_SCORES", "ONE_PASS_SCORES", "REGENERATION_SCORES"]

#: one-pass scores (larger = riskier), in the order of tables and CSV columns
ONE_PASS_SCORES: tuple[str, ...] = (
    "log_Lambda", "neg_log_p_g_over_n", "z_norm2_over_n", "velocity_rms", "velocity_growth", "velocity_change",
)

#: the one-pass scores a plain inversion gives (no divergence integral)
INVERSION_SCORES: tuple[str, ...] = ("z_norm2_over_n", "velocity_rms", "velocity_growth", "velocity_change")

#: scores that need regenerations (computed by the study; for comparison)
REGENERATION_SCORES: tuple[str, ...] = ("mu_bar", "lambda_jvp", "spectral_norm")

#: the default risk score of ``pfode largemodel rank`` (the best one-pass score measured on the models trained here)
DEFAULT_RISK = "velocity_change"
