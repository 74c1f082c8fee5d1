"""Experiments fig3, fig4 and thm42: tiny runs (result.json keys, PNGs) and the verdict logic on known answers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from simulate.experiments import load
from simulate.experiments.fig3 import experiment as fig3
from simulate.experiments.fig4 import experiment as fig4
from simulate.experiments.thm42 import experiment as thm42

PNG = b"\x89PNG\r\n\x1a\n"


def _check_outputs(out: Path, result, keys: list[str]) -> dict:
    data = json.loads((out / "result.json").read_text())
    assert data["name"] == result.name
    assert data["claim_ids"] == result.claim_ids
    assert data["verdict"]["status"].startswith(("verified", "holds in regime", "refuted"))
    assert "seed" in data["params"]
    for key in keys:
        node = data["numbers"]
        for part in key.split("."):
            assert part in node, f"missing numbers key {key!r}"
            node = node[part]
    assert result.figures
    for f in result.figures:
        assert (out / f).read_bytes()[:8] == PNG
    return data


# ------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("name, module, claims", [("fig3", fig3, ["fig3"]), ("fig4", fig4, ["fig4b"]), ("thm42", thm42, ["thm42"])])
def test_modules_registered(name, module, claims) -> None:
    assert load(name) is module
    assert module.NAME == name and module.CLAIM_IDS == claims and module.DESCRIPTION


@pytest.mark.parametrize("module", [fig3, fig4, thm42])
def test_unknown_override_rejected(module, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        module.run(tmp_path, progress=False, no_such_option=1)
    assert not (tmp_path / "result.json").exists()


# the option dicts of the code before the options dataclasses: params in result.json must not change
_OLD_FAST = {
    "fig3": {"means": ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.0)), "stds": 0.25, "weights": (0.4, 0.4, 0.2), "grid_n": 101,
             "grid_lim": 3.0, "fd_step": 1e-5, "green_center": (0.0, 0.0), "green_half": 0.1, "green_n": 21,
             "boundary_points": 400, "boundary_gap": 0.02, "boundary_rounds": 20, "boundary_min_width": 1e-10,
             "line_z2": 0.0, "line_n": 121, "s_values": (0.01, 0.1, 0.5), "prop21_s": (1e-2, 1e-3), "n_dirs": 32,
             "jvp_points": 3, "min_region_points": 3, "solver": "dopri5", "steps": 200, "rtol": 1e-9, "atol": 1e-11,
             "density_n": 200},
    "fig4": {"means": ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.0)), "stds": 0.5, "weights": (0.4, 0.4, 0.2), "box_margin": 2.0,
             "points": 400, "steps": 50, "num_perturbations": 16, "eps": 1e-3, "pipelines": ("euler", "heun", "euler_exact"),
             "rtol": 1e-9, "atol": 1e-11, "fp_tol": 1e-12, "fp_max_iter": 500, "n_resamples": 2000, "confidence": 0.95,
             "density_n": 200},
    "thm42": {"target": "ring", "radius": 1.0, "width": 0.1, "annulus_half_width": 0.2, "half_extent": 1.5,
              "ms": (4, 16, 64, 256), "sigma_factor": 0.5, "quad_n": 960, "eval_spacing": 0.02, "n_samples": 4000,
              "n_projections": 64},
}
_OLD_FULL = {
    "fig3": {"grid_n": 201, "green_n": 41, "boundary_points": 1000, "line_n": 301, "n_dirs": 64, "jvp_points": 7, "density_n": 300},
    "fig4": {"points": 2000, "num_perturbations": 32, "n_resamples": 5000},
    "thm42": {"ms": (4, 16, 64, 256, 1024), "eval_spacing": 0.01, "n_samples": 20000, "n_projections": 128},
}


@pytest.mark.parametrize("module", [fig3, fig4, thm42])
def test_options_keep_the_params_of_result_json(module) -> None:
    """asdict(FAST / FULL) gives the same keys, order and values as the option dicts they replace."""
    old = _OLD_FAST[module.NAME]
    for opts, want in ((module.FAST, old), (module.FULL, old | _OLD_FULL[module.NAME])):
        got = dataclasses.asdict(opts)
        assert list(got) == list(want) and got == want and all(type(got[k]) is type(want[k]) for k in want)
    assert module.make_options(full=True) == module.FULL
    assert dataclasses.asdict(module.make_options(**{list(old)[1]: old[list(old)[1]]})) == old
    with pytest.raises(dataclasses.FrozenInstanceError):
        module.FAST.__setattr__(list(old)[0], None)


@pytest.mark.parametrize("module, bad, match", [
    (fig3, {"weights": (0.5, 0.5)}, "weights"), (fig3, {"grid_n": 1}, "grid_n"), (fig3, {"solver": "rk45"}, "solver"),
    (fig3, {"fd_step": 0.0}, "fd_step"), (fig4, {"pipelines": ("euler", "midpoint")}, "pipelines"),
    (fig4, {"confidence": 1.0}, "confidence"), (fig4, {"stds": -0.5}, "stds"), (thm42, {"target": "disc"}, "target"),
    (thm42, {"ms": ()}, "ms"), (thm42, {"eval_spacing": -0.01}, "eval_spacing"),
])
def test_bad_options_rejected_before_running(module, bad, match, tmp_path) -> None:
    with pytest.raises(ValueError, match=match):
        module.run(tmp_path, progress=False, **bad)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ fig3
FIG3_TINY = dict(grid_n=21, green_n=5, boundary_points=40, boundary_rounds=4, line_n=15, n_dirs=8, jvp_points=1,
                 density_n=30, rtol=1e-7, atol=1e-9, fd_step=1e-4)


def test_fig3_tiny_run_expands_along_x(tmp_path) -> None:
    res = fig3.run(tmp_path, progress=False, **FIG3_TINY)
    data = _check_outputs(tmp_path, res, [
        "field.means", "expansion.x_extent_ratio", "expansion.y_extent_ratio", "expansion.area_ratio", "expansion.red_bbox",
        "lambda_map.max_lambda_x", "lambda_map.fraction_lambda_x_gt_1", "lambda_map.max_lambda_x_grid_fd",
        "lambda_map.fraction_lambda_x_gt_1_grid_fd", "lambda_map.jvp_check.max_rel_diff", "lambda_map.lambda_x_jvp_at_green_center",
        "line.lambda_x", "line.lambda_y", "line.spectral_norm", "line.mu", "line.prop21_rel_gap", "timings",
    ])
    assert set(res.figures) == {"fig3a_density.png", "fig3b_lambda_x.png", "fig3c_line.png"}
    assert res.verdict.status == "verified"
    ex = data["numbers"]["expansion"]
    assert ex["x_extent_ratio"] > 5 and ex["y_extent_ratio"] < 1  # stretched along x, squeezed along y
    lm = data["numbers"]["lambda_map"]
    assert lm["max_lambda_x"] > 10 and 0 < lm["fraction_lambda_x_gt_1"] < 0.5
    assert lm["jvp_check"]["max_rel_diff"] < 1e-4  # finite differences agree with AD off the ridge
    line = data["numbers"]["line"]
    norm = np.asarray(line["spectral_norm"])
    assert np.all(norm >= np.asarray(line["lambda_x"]) * (1 - 1e-9))  # ||J||_2 >= lambda along any axis


def test_fig3_single_gaussian_contracts_refuted(tmp_path) -> None:
    """N(0, 0.5^2 I): G(z) = 0.5 z, lambda = 0.5 < 1 everywhere, the square shrinks: refuted."""
    res = fig3.run(tmp_path, progress=False, **FIG3_TINY | dict(means=[[0.0, 0.0]], stds=0.5, weights=[1.0]))
    assert res.verdict.status == "refuted"
    lm, ex = res.numbers["lambda_map"], res.numbers["expansion"]
    assert lm["max_lambda_x"] == pytest.approx(0.5, rel=1e-5)
    assert lm["fraction_lambda_x_gt_1"] == 0.0
    assert ex["x_extent_ratio"] == pytest.approx(0.5, rel=1e-5)
    assert ex["area_ratio"] == pytest.approx(0.25, rel=1e-4)
    assert max(res.numbers["line"]["prop21_rel_gap"].values()) < 1e-3  # linear map: mu = ||J|| (to solver accuracy)


def test_classify_expansion_known_answers() -> None:
    lam = np.full((10, 10), 0.5)
    assert fig3.classify_expansion(lam, 0.5)[0] == "refuted"
    lam2 = lam.copy()
    lam2[:, 5] = 3.0
    assert fig3.classify_expansion(lam2, 4.0)[0] == "verified"
    assert fig3.classify_expansion(lam2, 0.8)[0].startswith("holds in regime")
    lam3 = lam.copy()
    lam3[0, 0] = 2.0  # a single point is not a region
    assert fig3.classify_expansion(lam3, 0.5, min_region_points=3)[0] == "refuted"


def test_polygon_area_unit_square() -> None:
    sq = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert fig3.polygon_area(sq) == pytest.approx(1.0)
    assert fig3.polygon_area(sq[::-1]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ fig4
def test_fig4_tiny_run(tmp_path) -> None:
    res = fig4.run(tmp_path, progress=False, points=60, num_perturbations=4, n_resamples=200, density_n=30)
    data = _check_outputs(tmp_path, res, [
        "field.stds", "box", "classification",
        *[f"pipelines.{p}.{k}" for p in ("euler", "heun", "euler_exact")
          for k in ("error.median", "mu_bar.median", "correlation.spearman_rho", "correlation.spearman_p",
                    "correlation.spearman_ci", "correlation.pearson_r", "correlation.pearson_p", "correlation.pearson_ci",
                    "decomposition.r2_both", "decomposition.pearson_log_error_log_disc_dopri5",
                    "decomposition.spearman_amplification_mu_bar")],
        "pipelines.euler.exact_inversion.max_error", "per_point.x", "per_point.euler.error", "timings",
    ])
    assert set(res.figures) == {"fig4a_density.png", "fig4b_scatter.png"}
    # exact (fixed-point) inversion of the same scheme reproduces x to ~tolerance
    for p in ("euler", "heun"):
        ex = data["numbers"]["pipelines"][p]["exact_inversion"]
        assert ex["converged"] and ex["max_error"] < 1e-8
    c = data["numbers"]["pipelines"]["euler"]["correlation"]
    assert c["spearman_ci"][0] <= c["spearman_rho"] <= c["spearman_ci"][1]


def test_correlation_classifier_on_synthetic_data() -> None:
    rng = np.random.default_rng(3)
    x = np.exp(rng.normal(size=300))
    pos = fig4.correlation_summary(x, x * np.exp(0.5 * rng.normal(size=300)), n_resamples=500)
    neg = fig4.correlation_summary(x, np.exp(0.5 * rng.normal(size=300)) / x, n_resamples=500)
    none = fig4.correlation_summary(x, np.exp(rng.normal(size=300)), n_resamples=500)
    assert fig4.classify_correlation(pos) == "positive" and pos["pearson_on_logs"]
    assert pos["spearman_ci"][0] > 0 and pos["spearman_p"] < 1e-10
    assert fig4.classify_correlation(neg) == "negative" and neg["spearman_ci"][1] < 0
    assert fig4.classify_correlation(none) == "none"
    assert none["spearman_ci"][0] < 0 < none["spearman_ci"][1]
    const = fig4.correlation_summary(x, np.ones_like(x))
    assert fig4.classify_correlation(const) == "none" and const["spearman_rho"] is None


def test_bootstrap_interval_is_seeded() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    y = x + rng.normal(size=80)
    a = fig4.correlation_summary(x, y, seed=5, n_resamples=300)
    b = fig4.correlation_summary(x, y, seed=5, n_resamples=300)
    assert a["spearman_ci"] == b["spearman_ci"] and a["pearson_ci"] == b["pearson_ci"]
    assert not a["pearson_on_logs"]  # negative values: Pearson on the raw values


def test_r_squared_exact_fit() -> None:
    x = np.linspace(0, 1, 20)
    r2, coef = fig4.r_squared(2 + 3 * x, x)
    assert r2 == pytest.approx(1.0) and coef == pytest.approx([2.0, 3.0])


# ------------------------------------------------------------------------------ thm42
def test_thm42_tiny_run(tmp_path) -> None:
    res = thm42.run(tmp_path, progress=False, ms=(4, 16, 64), quad_n=96, eval_spacing=0.04, n_samples=400, n_projections=16)
    data = _check_outputs(tmp_path, res, [
        "target.kind", "target.mass_in_square", "rows", "l1", "sliced_w1", "sliced_w1_noise_floor", "l1_monotone",
        "l1_ratio_last_first",
    ])
    assert set(res.figures) == {"thm42_densities.png", "thm42_distances.png"}
    assert res.verdict.status == "verified" and data["numbers"]["l1_monotone"]
    for row in data["numbers"]["rows"]:
        assert {"m", "k", "m_effective", "side", "sigma", "l1", "lp_upper_bound", "mass_mixture", "mass_target"} <= set(row)
        assert row["mass_mixture"] == pytest.approx(1.0, abs=1e-3) and row["mass_target"] == pytest.approx(1.0, abs=1e-3)
        assert 0 <= row["l1"] <= 2


def test_thm42_monotonicity_classifier() -> None:
    assert thm42.is_monotone_decreasing([1.5, 1.2, 0.8, 0.4])
    assert not thm42.is_monotone_decreasing([1.5, 1.2, 1.2, 0.4])
    assert not thm42.is_monotone_decreasing([1.0, float("nan")])
    assert not thm42.is_monotone_decreasing([1.0])
    assert thm42.classify_monotone([4, 16, 64], [1.0, 0.5, 0.2]) == "verified"
    assert thm42.classify_monotone([4, 16, 64, 256], [1.0, 0.5, 0.2, 0.3]).startswith("holds in regime m <= 64")
    assert thm42.classify_monotone([4, 16, 64], [1.0, 1.1, 0.2]) == "refuted"
    assert thm42.classify_monotone([4, 16, 64], [1.62, 1.45, 1.42]) == "refuted"  # levels off: not L1 -> 0


@pytest.mark.parametrize("radius", [0.15, 0.5, 2.0])
@pytest.mark.parametrize("target", ["ring", "annulus"])
def test_thm42_target_density_integrates_to_one_at_any_radius(target, radius) -> None:
    """The closed-form normalisation (ring: Z = 2 pi (w^2 e^{-R^2/2w^2} + R w sqrt(2 pi) Phi(R/w))) against
    a midpoint sum; radius 1 alone cannot tell a missing factor R."""
    opts = thm42.make_options(target=target, radius=radius)
    h = 0.004
    c = np.arange(-radius - 1.0, radius + 1.0, h) + h / 2
    X, Y = np.meshgrid(c, c)
    mass = thm42.target_density(np.stack([X, Y], -1), opts).sum() * h * h
    assert mass == pytest.approx(1.0, abs=3e-3)


@pytest.mark.parametrize("target", ["ring", "annulus"])
def test_thm42_target_density_and_samples(target) -> None:
    opts = thm42.make_options(target=target)
    h = 0.005
    c = np.arange(-1.6, 1.6, h) + h / 2
    X, Y = np.meshgrid(c, c)
    mass = thm42.target_density(np.stack([X, Y], -1), opts).sum() * h * h
    assert mass == pytest.approx(1.0, abs=2e-3)
    s = thm42.sample_target(4000, opts, np.random.default_rng(0))
    r = np.linalg.norm(s, axis=1)
    assert abs(r.mean() - 1.0) < 0.02
    # sliced W1 of a sample with itself is 0; with a shifted copy it equals the mean projected shift
    assert thm42.sliced_w1(s, s, 8, np.random.default_rng(0)) == 0.0
    assert thm42.sliced_w1(s, s + np.array([0.3, 0.0]), 64, np.random.default_rng(0)) == pytest.approx(0.3 * 2 / math.pi, rel=0.1)


def test_thm42_rejects_non_square_m(tmp_path) -> None:
    with pytest.raises(ValueError, match="perfect square"):
        thm42.run(tmp_path, progress=False, ms=(4, 10))
