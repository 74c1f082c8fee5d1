"""``simulate.set_threads`` and ``PFODE_THREADS``: the library pins no threads by itself, and
honours the ones the user asks for."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from simulate.threads import set_threads, threads_from_env

PROBE = ("import torch; torch.set_num_threads(2); import simulate, largemodel; "
         "simulate.BoxMixture; print(torch.get_num_threads())")


def _threads_after_use(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PFODE_THREADS"}
    if env_value is not None:
        env["PFODE_THREADS"] = env_value
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def test_env_var_is_honoured_and_nothing_pinned_without_it() -> None:
    assert _threads_after_use(None) == "2"  # control: the library leaves torch's setting alone
    assert _threads_after_use("1") == "1"
    assert "PFODE_THREADS must be an integer >= 0" in _threads_after_use("two")


def test_set_threads_validates_and_restores(monkeypatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(0) == 1  # 0 keeps the setting
        for bad in (-1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="threads must be an integer >= 0"):
                set_threads(bad)
        monkeypatch.setenv("PFODE_THREADS", "-3")
        with pytest.raises(ValueError, match="PFODE_THREADS"):
            threads_from_env()
        monkeypatch.setenv("PFODE_THREADS", "")
        assert threads_from_env() is None
    finally:
        torch.set_num_threads(before)
