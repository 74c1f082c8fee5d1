"""The claim experiments lemma-d1, prop21, thm31, thm41: outputs, closed-form cases, verdict logic, resume.

Every run here uses a tiny parameterisation through ``run(out, ..., **overrides)`` (fields of each
module's options dataclass) so that the file runs in well under a minute on one CPU thread. Also the
shared runner (:mod:`simulate.experiments.runner`) and the options' validation.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import FrozenInstanceError, asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")

from simulate.experiments.lemma_d1 import experiment as lemma_d1
from simulate.experiments.prop21 import experiment as prop21
from simulate.experiments.prop21 import judge as prop21_judge
from simulate.experiments.thm31 import experiment as thm31
from simulate.experiments.thm31 import judge as thm31_judge
from simulate.experiments.thm41 import experiment as thm41
from simulate.experiments.common import ExperimentResult, RecordStore  # noqa: E402
from simulate.experiments.oracles import fd_jacobian  # noqa: E402
from simulate.experiments.runner import SweepStats, sweep, torch_threads  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"

TINY: dict[str, dict[str, Any]] = {
    "lemma_d1": {"fields": ("gmm", "box"), "dims": (2, 16), "points": 2, "sweep_n": 2, "sweep_rtols": (1e-5, 1e-7)},
    "prop21": {"line_points": 5, "random_points": 2, "rk4_steps": 10, "box_n": 3, "box_points": 2, "box_rk4_steps": 10,
               "min_scale": 1e-7},
    "thm31": {"fields": ("gmm",), "steps": (10, 20), "points": 4, "path_steps": 200, "kappa_samples": 3, "kappa_rk4_steps": 50},
    "thm41": {"fields": ("cover",), "dims": (2, 4), "samples": 40, "taus": (0.15, 1.0), "eps_values": (0.5,)},
}
MODULES = {"lemma_d1": lemma_d1, "prop21": prop21, "thm31": thm31, "thm41": thm41}
#: the per-unit work functions of each module (the resume test replaces them)
UNIT_FUNCS = {"lemma_d1": ("compute_unit", "compute_sweep"), "prop21": ("compute_unit",),
              "thm31": ("compute_unit",), "thm41": ("compute_unit",)}
NUMBER_KEYS = {
    "lemma_d1": {"tol", "units", "log_Lambda", "max_diff_by_pair", "sweep", "sweep_slopes", "failures"},
    "prop21": {"units", "line", "jacobian_ad_vs_fd", "errors", "seconds_per_unit"},
    "thm31": {"per_field", "per_point", "seconds_per_field"},
    "thm41": {"cases", "units", "tol_log_Lambda", "violations_total", "informative_cases", "holds_within_intervals_all"},
}
FIGURES = {"lemma_d1": "lemma_d1.png", "prop21": "prop21.png", "thm31": "thm31.png", "thm41": "thm41.png"}


def _check_outputs(out: Path, res: ExperimentResult, name: str) -> dict[str, Any]:
    data = json.loads((out / "result.json").read_text())
    assert {"name", "claim_ids", "verdict", "params", "numbers", "figures", "seconds"} <= set(data)
    assert data["name"] == MODULES[name].NAME and data["claim_ids"] == MODULES[name].CLAIM_IDS
    assert set(data["verdict"]) >= {"status", "key_number", "evidence"}
    assert data["verdict"]["status"].startswith(("verified", "holds in regime", "refuted"))
    assert data["params"]["seed"] == 0
    assert NUMBER_KEYS[name] <= set(data["numbers"])
    assert data["figures"] == [FIGURES[name]]
    assert (out / FIGURES[name]).read_bytes()[:8] == PNG
    assert res.verdict.status == data["verdict"]["status"]
    return data


# ------------------------------------------------------------------------------ every experiment
@pytest.mark.parametrize("name", list(MODULES))
def test_tiny_run_outputs_and_resume(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documented JSON keys, the PNG, a ``verified`` verdict; a rerun recomputes nothing."""
    mod = MODULES[name]
    res = mod.run(tmp_path, progress=False, **TINY[name])
    data = _check_outputs(tmp_path, res, name)
    assert data["verdict"]["status"] == "verified", data["verdict"]

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a recorded unit was recomputed")

    for fn in UNIT_FUNCS[name]:
        monkeypatch.setattr(mod, fn, boom)
    again = mod.run(tmp_path, progress=False, **TINY[name])
    assert again.verdict == res.verdict
    assert json.loads((tmp_path / "result.json").read_text())["numbers"] == data["numbers"]


def test_unknown_override_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        thm41.run(tmp_path, progress=False, nope=1)


def test_interrupted_run_resumes_without_recomputing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupt after the first unit; the rerun computes only the units not yet recorded."""
    opts = {"fields": ("gaussian",), "dims": (2, 3, 4), "samples": 10, "taus": (0.5,), "eps_values": (0.5,)}
    real = thm41.compute_unit
    calls: list[int] = []

    def interrupting(kind: str, n: int, o: thm41.Thm41Options, seed: int) -> dict:
        if calls:
            raise KeyboardInterrupt
        calls.append(n)
        return real(kind, n, o, seed)

    monkeypatch.setattr(thm41, "compute_unit", interrupting)
    with pytest.raises(KeyboardInterrupt):
        thm41.run(tmp_path, progress=False, **opts)
    assert calls == [2]
    recomputed: list[int] = []

    def counting(kind: str, n: int, o: thm41.Thm41Options, seed: int) -> dict:
        recomputed.append(n)
        return real(kind, n, o, seed)

    monkeypatch.setattr(thm41, "compute_unit", counting)
    res = thm41.run(tmp_path, progress=False, **opts)
    assert recomputed == [3, 4]
    assert sorted({c["n"] for c in res.numbers["cases"]}) == [2, 3, 4]
    # different parameters: a fresh store (the old one is moved aside), everything recomputed
    recomputed.clear()
    thm41.run(tmp_path, progress=False, **(opts | {"dims": (2,)}))
    assert recomputed == [2]
    assert list(tmp_path.glob("records.stale-*.jsonl"))


# ------------------------------------------------------------------------------ lemma-d1
def test_lemma_d1_single_gaussian_Lambda_is_s(tmp_path: Path) -> None:
    """G(z) = mu + s z: log Lambda = log s by all three methods."""
    s = 0.3
    res = lemma_d1.run(tmp_path, progress=False, fields=("gaussian",), dims=(3,), points=3, sweep_n=None, gaussian_std=s)
    assert res.verdict.status == "verified"
    (unit,) = res.numbers["units"]
    vals = res.numbers["log_Lambda"]["gaussian:n=3"]
    assert set(vals) == {"density_ratio", "divergence", "slogdet"}
    for method, v in vals.items():
        np.testing.assert_allclose(v, math.log(s), atol=1e-7, err_msg=method)
    assert max(unit["max_diff"].values()) <= res.numbers["tol"]


def test_lemma_d1_verdict_refutes_a_disagreement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = lemma_d1.log_Lambda_G

    def biased(field: Any, z: torch.Tensor, **kw: Any) -> torch.Tensor:
        return real(field, z, **kw) + 1e-3  # a wrong density ratio

    monkeypatch.setattr(lemma_d1, "log_Lambda_G", biased)
    res = lemma_d1.run(tmp_path, progress=False, fields=("gaussian",), dims=(2,), points=2, sweep_n=None)
    assert res.verdict.status.startswith("refuted")
    assert res.numbers["failures"]


def test_lemma_d1_verdict_regime() -> None:
    units = [{"field": "g", "n": n, "max_diff": {"a-b": d}} for n, d in ((2, 1e-8), (8, 1e-8), (64, 1e-3))]
    verdict, failures, _ = lemma_d1.verdict_from_units(units, 1e-6, 1e-8, 1e-10)
    assert verdict.status.startswith("holds in regime n <= 8") and len(failures) == 1
    verdict, _, _ = lemma_d1.verdict_from_units(units[:2], 1e-6, 1e-8, 1e-10)
    assert verdict.status == "verified"


def test_fd_jacobian_of_affine_map() -> None:
    A = torch.tensor([[2.0, -1.0], [0.5, 3.0]], dtype=torch.float64)
    z = torch.randn(4, 2, dtype=torch.float64)
    J = fd_jacobian(lambda p: p @ A.T + 1.0, z)
    torch.testing.assert_close(J, A.expand(4, 2, 2), rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------ prop21
def test_prop21_single_gaussian_is_affine(tmp_path: Path) -> None:
    """The RK4 map of a Gaussian's linear field is affine: mu = lambda = ||J||_2 = s at every scale."""
    s = 0.3
    res = prop21.run(tmp_path, progress=False, field="gaussian", gaussian_std=s, line_points=3, random_points=2,
                     rk4_steps=60, box_n=None, min_scale=1e-6)
    assert res.verdict.status == "verified"
    for name in ("line_x", "line_y", "random"):
        u = res.numbers["units"][name]
        np.testing.assert_allclose(u["lambda_u"], s, rtol=1e-6)
        np.testing.assert_allclose(u["spectral_norm_svd"], s, rtol=1e-6)
        np.testing.assert_allclose(u["max_mu"], s, rtol=1e-6)
        assert u["order_median"] is None  # affine: every error is round-off
        assert u["guaranteed_unstable_points"] == 0 and u["unstable_points"] == 0
        assert max(max(row) for row in res.numbers["errors"][name]) < 1e-8


def test_prop21_verdict_logic() -> None:
    good = {"unit": "a", "n": 2, "points": 3, "failed_points": [], "converged_fraction": 1.0, "holds_fraction": 1.0,
            "min_error_median": 1e-9, "min_error_max": 1e-8, "order": [1.0], "order_median": 1.0, "order_min": 1.0,
            "order_max": 1.0, "worst_gap_b": -1e-3, "guaranteed_unstable_points": 1, "unstable_points": 1}
    bad = good | {"unit": "b", "failed_points": [0], "converged_fraction": 2 / 3}
    assert prop21_judge.verdict([good], 1e-3).status == "verified"
    assert prop21_judge.verdict([good, bad], 1e-3).status.startswith("holds in regime")
    assert prop21_judge.verdict([bad], 1e-3).status.startswith("refuted")


# ------------------------------------------------------------------------------ thm31
def test_thm31_single_gaussian_closed_forms(tmp_path: Path) -> None:
    """kappa = s, ||x^ - x|| = s ||z~ - z||, L = max_t |k(t)|, M = max_t |sqrt(S)''| ||z||."""
    s = 0.5
    K = 200
    res = thm31.run(tmp_path, progress=False, fields=("gaussian",), gaussian_std=s, steps=(10, 40), points=4,
                    path_steps=K, kappa_samples=3, kappa_rk4_steps=100)
    assert res.verdict.status == "verified"
    pp = res.numbers["per_point"]["gaussian"]
    t = np.linspace(1.0, 0.0, K + 1)
    S = t**2 * s**2 + (1 - t) ** 2
    k = (t * s**2 - (1 - t)) / S
    np.testing.assert_allclose(pp["L_path"], np.max(np.abs(k)), rtol=1e-10)
    dS, d2S = 2 * t * s**2 - 2 * (1 - t), 2 * s**2 + 2
    sqrtS_dd = d2S / (2 * np.sqrt(S)) - dS**2 / (4 * S**1.5)
    rec = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[1])["value"]
    z_norm = np.linalg.norm(np.array(rec["z"]), axis=1)
    np.testing.assert_allclose(pp["M"], np.max(np.abs(sqrtS_dd)) * z_norm, rtol=1e-5)
    z_exact = (np.array(rec["x"]) - 0.5) / s  # F(x) = (x - mu) / s
    np.testing.assert_allclose(np.array(rec["z"]), z_exact, atol=1e-9)
    for N in ("10", "40"):
        for row in pp["per_N"][N]["rows"]:
            assert row["kappa"] == pytest.approx(s, rel=1e-6)
            assert row["recon_error"] == pytest.approx(s * row["noise_error"], rel=1e-6)
            assert all(row["holds"].values())


def test_thm31_verdict_refutes_a_broken_bound() -> None:
    summary = {"by_N": {"10": {"holds_fraction": {b: 1.0 for b in ("noise", "reconstruction", "gronwall", "amplification", "kappa",
                                                                     "noise_Lpath", "reconstruction_Lpath", "gronwall_Lpath")},
                               "tightness": {b: {"median": -1.0, "min": -2.0, "max": -0.5} for b in thm31_judge.BOUNDS}}},
               "L_median": 1.0, "L_path_median": 1.0, "L_tube_over_path_max": 1.0, "M_median": 1.0, "slope": -1.0,
               "slope_per_point_median": -1.0, "points": 40, "failing_points": 0}
    assert thm31_judge.verdict({"f": summary}).status == "verified"
    assert "40/40 (point, N) checks" in thm31_judge.verdict({"f": summary}).key_number
    assert "upper end 0.088" in thm31_judge.verdict({"f": summary}).key_number  # 1 - 0.025**(1/40)
    summary["by_N"]["10"]["holds_fraction"]["noise"] = 0.75
    assert thm31_judge.verdict({"f": summary}).status.startswith("refuted")


# ------------------------------------------------------------------------------ thm41
@pytest.mark.parametrize("tau, expected", [(0.5, 1.0), (1.0, 0.0)])
def test_thm41_single_gaussian_P_inst_is_0_or_1(tmp_path: Path, tau: float, expected: float) -> None:
    """Lambda = s = 0.8 for every x: P_inst(tau) = 1 for tau < s, 0 for tau > s."""
    res = thm41.run(tmp_path, progress=False, fields=("gaussian",), dims=(2, 4), samples=30, taus=(tau,),
                    eps_values=(0.5,), gaussian_std=0.8)
    assert res.verdict.status == "verified"
    assert res.numbers["violations_total"] == 0
    for case in res.numbers["cases"]:
        assert case["p_inst"]["estimate"] == expected
        assert case["divergence"]["p_inst"]["estimate"] == expected
        assert case["p_inst"]["successes"] == (30 if expected else 0)
        assert case["holds_within_intervals"]
    for unit in res.numbers["units"]:
        np.testing.assert_allclose(unit["Lambda_quantiles_0_10_50_90_100"], 0.8, rtol=1e-6)


def test_thm41_verdict_refutes_wrong_Lambda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Lambda that is far too small makes P_inst fall below the bound and violates Lemma D.2."""
    real = thm41.compute_unit

    def shrunk(kind: str, n: int, o: thm41.Thm41Options, seed: int) -> dict:
        rec = real(kind, n, o, seed)
        rec["log_Lambda_ratio"] = [-10.0] * len(rec["log_Lambda_ratio"])
        return rec

    monkeypatch.setattr(thm41, "compute_unit", shrunk)
    res = thm41.run(tmp_path, progress=False, fields=("cover",), dims=(8,), samples=40, taus=(0.15,), eps_values=(0.5,))
    assert res.verdict.status.startswith("refuted")
    assert res.numbers["cases"][0]["lemma_d2_violations"] > 0
    assert not res.numbers["holds_within_intervals_all"]


# ------------------------------------------------------------------------------ options (one shape)
#: the option dicts of these experiments before they became dataclasses: ``params`` must not change
OLD_FAST: dict[str, dict[str, Any]] = {
    "lemma_d1": {"fields": ("gmm", "box"), "dims": (2, 4, 8, 32, 128, 256), "points": 8, "slogdet_max_n": 8, "rtol": 1e-8,
                 "atol": 1e-10, "tol_factor": 100.0, "rk4_steps": 400, "grid_power": 2.0, "fd_step": 1e-6, "sweep_n": 8,
                 "sweep_rtols": (1e-4, 1e-6, 1e-8, 1e-10), "gaussian_std": 0.3},
    "prop21": {"field": "gmm", "gaussian_std": 0.3, "line_points": 81, "random_points": 16, "rk4_steps": 50, "box_n": 8,
               "box_points": 6, "box_rk4_steps": 40, "eps": 1e-3, "min_scale": 1e-8, "fig_scales": (0.5, 0.1, 0.02)},
    "thm31": {"fields": ("gmm", "box"), "steps": (10, 30, 100, 300), "points": 12, "path_steps": 1200, "kappa_samples": 7,
              "kappa_rk4_steps": 200, "gaussian_std": 0.3},
    "thm41": {"fields": ("cover", "sparse"), "dims": (2, 8, 32), "samples": 300, "taus": (0.15, 0.25, 0.5, 1.0, 2.0, 4.0),
              "eps_values": (0.25, 1.0), "rtol": 1e-7, "atol": 1e-9, "gaussian_std": 0.8},
}
OLD_FULL_CHANGES: dict[str, dict[str, Any]] = {
    "lemma_d1": {"dims": (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), "points": 32},
    "prop21": {"line_points": 161, "random_points": 64, "box_points": 24, "rk4_steps": 100, "box_rk4_steps": 100},
    "thm31": {"steps": (10, 30, 100, 300, 1000), "points": 48, "path_steps": 3000, "kappa_samples": 11, "kappa_rk4_steps": 400},
    "thm41": {"dims": (2, 8, 32, 128), "samples": 2000},
}


@pytest.mark.parametrize("name", list(MODULES))
def test_options_asdict_is_the_old_params(name: str) -> None:
    """``asdict`` of FAST / FULL gives the old option dicts: same keys, order, values and types."""
    mod = MODULES[name]
    for opts, want in ((mod.FAST, OLD_FAST[name]), (mod.FULL, OLD_FAST[name] | OLD_FULL_CHANGES[name])):
        got = asdict(opts)
        assert list(got) == list(want)
        assert got == want and all(type(got[k]) is type(want[k]) for k in want)
    assert mod.make_options() == mod.FAST and mod.make_options(full=True) == mod.FULL


@pytest.mark.parametrize("name, override, match", [
    ("lemma_d1", {"dims": (0, 2)}, "^dims"),
    ("lemma_d1", {"fields": ("gmm", "nope")}, "^fields"),
    ("lemma_d1", {"sweep_n": 0}, "^sweep_n"),
    ("prop21", {"field": "box"}, "^field"),
    ("prop21", {"min_scale": 0.0}, "min_scale"),
    ("thm31", {"steps": (7,)}, "^path_steps"),
    ("thm31", {"points": 1}, "^points"),
    ("thm41", {"taus": (0.0, 1.0)}, "^taus"),
    ("thm41", {"samples": 0}, "^samples"),
    ("thm41", {"nope": 1}, "^unknown option"),
])
def test_bad_options_raise_before_any_work(name: str, override: dict[str, Any], match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        MODULES[name].run(tmp_path, progress=False, **override)
    assert not (tmp_path / "records.jsonl").exists()


def test_options_normalise_lists_and_numbers() -> None:
    assert thm41.make_options(dims=[2, 8], taus=[1, 2]) == thm41.make_options(dims=(2, 8), taus=(1.0, 2.0))
    opts = lemma_d1.make_options(rtol=1e-6, tol_factor=50)
    assert opts.tol == 50.0 * 1e-6 and isinstance(opts.tol_factor, float)
    with pytest.raises(FrozenInstanceError):
        opts.rtol = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------------------ the runner
def _units(log: list[str], keys: list[str]) -> list[tuple[str, Any]]:
    def make(key: str) -> Any:
        def compute() -> dict[str, Any]:
            log.append(key)
            return {"key": key, "value": len(log)}
        return compute
    return [(k, make(k)) for k in keys]


def test_sweep_computes_in_order_then_reuses(tmp_path: Path) -> None:
    log: list[str] = []
    store = RecordStore(tmp_path, {"p": 1})
    stats = sweep(store, _units(log, ["a", "b", "c"]), desc="t", progress=False)
    assert stats == SweepStats(computed=3, reused=0, skipped=0) and log == ["a", "b", "c"]
    assert [store.get(k)["value"] for k in "abc"] == [1, 2, 3]
    again = RecordStore(tmp_path, {"p": 1})  # reopened from disk
    stats = sweep(again, _units(log, ["a", "b", "c", "d"]), desc="t", progress=False)
    assert stats == SweepStats(computed=1, reused=3, skipped=0) and log[-1] == "d" and len(log) == 4


def test_sweep_skip_hook_sees_earlier_records_and_is_not_asked_for_recorded_units(tmp_path: Path) -> None:
    log: list[str] = []
    store = RecordStore(tmp_path, {"p": 2})
    sweep(store, _units(log, ["a"]), desc="t", progress=False)
    asked: list[str] = []

    def skip(key: str) -> bool:
        asked.append(key)
        return key == "c" and store.done("b")  # b was recorded before c is asked

    stats = sweep(store, _units(log, ["a", "b", "c", "d"]), desc="t", progress=False, skip=skip)
    assert stats == SweepStats(computed=2, reused=1, skipped=1)
    assert asked == ["b", "c", "d"] and not store.done("c") and store.done("d")


def test_sweep_interrupted_keeps_finished_units(tmp_path: Path) -> None:
    store = RecordStore(tmp_path, {"p": 3})

    def boom() -> dict[str, Any]:
        raise KeyboardInterrupt

    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        sweep(store, _units(log, ["a"]) + [("b", boom)], desc="t", progress=False)
    assert RecordStore(tmp_path, {"p": 3}).done("a") and not RecordStore(tmp_path, {"p": 3}).done("b")


def test_sweep_rejects_duplicate_keys_before_computing(tmp_path: Path) -> None:
    log: list[str] = []
    with pytest.raises(ValueError, match="duplicate unit keys"):
        sweep(RecordStore(tmp_path, {}), _units(log, ["a", "b", "a"]), desc="t", progress=False)
    assert log == []


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored even on error")
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="^threads"), torch_threads(-1):
        pass
