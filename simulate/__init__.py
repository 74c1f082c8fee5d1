"""Exact flow-matching fields, batched ODE solvers, the maps G, F and reconstruction, and
instability estimators: the simulator the suite checks the paper against (docs/theory.md §1-§4, §6.1).

Importing the package imports nothing heavy (no torch): the names in ``__all__`` and the
submodules are loaded on first access, so ``pfode --help`` starts fast.

Threads: the library leaves torch's thread count as it is; call ``simulate.set_threads(1)`` or set
``PFODE_THREADS=1`` (applied on the first use of a public name) when other processes share the
cores (:mod:`simulate.threads`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

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

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from simulate.threads import apply_env

        apply_env()  # PFODE_THREADS, if set (simulate.threads)
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
