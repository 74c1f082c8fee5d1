"""Lazy package attributes: the one loader behind the ``__init__`` of ``theory``, ``simulate``,
``largemodel`` and ``reports``.

Standard library only, so that importing any of the four packages loads no numpy, torch, diffusers
or scipy (``pfode --help`` starts fast): a package lists its public names (each with the module that defines it)
and its submodules, and :func:`lazy_package` returns the ``__all__``, ``__getattr__`` and
``__dir__`` that load each one on first access (PEP 562).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, Callable

__all__ = ["lazy_package"]


def lazy_package(
    package: str, exports: dict[str, str], submodules: tuple[str, ...] = (),
    on_first_use: Callable[[], None] | None = None,
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for the package named ``package``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the submodule (relative to the package) that defines it; loaded
            on first access and then kept in the package's namespace.
        submodules: submodules reachable as attributes (``package.sub``) without an import.
            Any other submodule is reachable too, if it exists; a name starting with ``_``
            that is neither exported nor listed raises ``AttributeError``.
        on_first_use: called before an exported name is loaded (e.g. ``simulate.threads.apply_env``,
            which applies ``PFODE_THREADS``).
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            if on_first_use is not None:
                on_first_use()
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        if name in submodules or (not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}")):
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    names = [*exports, *submodules]

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return names, __getattr__, __dir__
