"""Exact flow-matching fields, batched ODE solvers, the maps G, F and reconstruction, and
instability estimators: the simulator the suite checks the paper against (docs/theory.md §1-§4, §6.1).

Importing the package imports nothing heavy (no torch): the names in ``__all__`` and the
submodules are loaded on first access, so ``pfode --help`` starts fast.

Threads: the library leaves torch's thread count as it is; call ``simulate.set_threads(1)`` or set
``PFODE_THREADS=1`` (applied on the first use of a public name) when other processes share the
cores (:mod:`simulate.threads`).
"""

from __future__ import annotations

from theory._lazy import lazy_package

#: public names, each loaded lazily from its module
_EXPORTS: dict[str, str] = {
    "BoxMixture": "fields",
    "FieldValues": "fields",
    "Gaussian": "fields",
    "GaussianMixture": "fields",
    "MixtureField": "fields",
    "Reconstruction": "maps",
    "SolveResult": "solvers",
    "VelocityField": "fields",
    "averaged_instability": "instability",
    "dopri5": "solvers",
    "euler": "solvers",
    "generate": "maps",
    "generation_map": "instability",
    "heun": "solvers",
    "invert": "maps",
    "invert_fixed_point": "inversion",
    "lambda_G": "instability",
    "log_Lambda_G": "instability",
    "log_Lambda_G_at_inverse": "instability",
    "reconstruct": "maps",
    "rk4": "solvers",
    "spectral_norm_G": "instability",
    "time_grid": "solvers",
    "set_threads": "threads",
}


def _apply_threads() -> None:
    from simulate.threads import apply_env

    apply_env()  # PFODE_THREADS, if set


__all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS, on_first_use=_apply_threads)
