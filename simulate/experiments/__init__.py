"""The experiments that check each claim of the paper (``pfode simulate <experiment>``).

Each experiment module defines ``NAME``, ``DESCRIPTION`` and
``run(out_dir, *, full=False, seed=0, progress=True) -> ExperimentResult``; :data:`EXPERIMENTS`
maps names to modules (imported lazily so that the CLI starts fast).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from simulate.experiments.common import ExperimentResult, Verdict

__all__ = ["EXPERIMENTS", "load", "ExperimentResult", "Verdict"]

#: experiment name -> module (relative to this package)
EXPERIMENTS: dict[str, str] = {
    "lemma-d1": "lemma_d1.experiment",
    "prop21": "prop21.experiment",
    "thm31": "thm31.experiment",
    "thm41": "thm41.experiment",
    "thm43": "thm43.experiment",
    "fig3": "fig3.experiment",
    "fig4": "fig4.experiment",
    "thm42": "thm42.experiment",
}


def load(name: str) -> ModuleType:
    """The module of experiment ``name`` (ValueError listing the valid names otherwise)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {', '.join(EXPERIMENTS)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")
