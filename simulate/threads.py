"""How many CPU threads torch uses in the library: :func:`set_threads` and ``PFODE_THREADS``.

The library pins nothing by itself: torch starts with its default (one thread per core). The
simulator's tensors are small, and on a machine whose cores other processes share, torch's
default can be many times slower than one thread (issue 31: ``simulate.invert`` of 512 points took
5-6 s with one thread and 110 s with two on a loaded 2-core machine). The ``pfode`` command line
runs with one thread (``--threads``); in your own code call ``simulate.set_threads(1)``, or set the
environment variable ``PFODE_THREADS=1``: it is applied the first time a public name of
``simulate`` or ``largemodel`` is used (``simulate.BoxMixture``, ``largemodel.load_model``, ...).

Imports torch only when a thread count is set.
"""

from __future__ import annotations

import os

__all__ = ["ENV_VAR", "set_threads", "threads_from_env", "apply_env"]

#: the environment variable naming the thread count (a positive integer; 0 keeps torch's default)
ENV_VAR = "PFODE_THREADS"

_applied = False


def threads_from_env() -> int | None:
    """``PFODE_THREADS`` as an integer >= 0, ``None`` when unset or empty.

    Raises:
        ValueError: naming ``PFODE_THREADS`` when it is not an integer >= 0.
    """
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{ENV_VAR} must be an integer >= 0 (0 keeps torch's default), got {text!r}")
    return value


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads for this process to ``n`` (``None``: ``PFODE_THREADS``;
    ``0`` or unset: torch's setting kept) and return the number now in use.

    Raises:
        ValueError: ``n`` (or ``PFODE_THREADS``) is not an integer >= 0, before anything changes.
    """
    if n is None:
        n = threads_from_env() or 0
    elif isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 keeps torch's setting), got {n!r}")
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def apply_env() -> None:
    """Apply ``PFODE_THREADS`` once per process, if set (called by ``simulate`` and ``largemodel``
    on the first use of a public name)."""
    global _applied
    if _applied:
        return
    _applied = True
    if threads_from_env():
        set_threads(None)
