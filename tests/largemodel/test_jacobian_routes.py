"""The fused-kernel routes of the Jacobian products (docs/theory.md §10.6, issue 27 item 5).

Route ``vjp-fd`` (Hutchinson's ``e^T J_u e`` by one VJP per probe; power iteration's ``J_G v`` by
forward or central differences of the velocity along the recorded trajectory, ``J_G^T w`` by reverse
mode) against route ``math-jvp`` (forward-mode AD under the math attention kernel) on tiny SD3 and
FLUX models built from configs. Measured agreement (2-core CPU): Hutchinson, same probes,
fp64: 1.6e-15 (SD3), 3.2e-8 (FLUX; its rotary embedding rounds to fp32 inside an fp64 model);
spectral norm, 8 iterations, same start (2026-12-08), central differences: fp64 4.5e-12 / 2.4e-5,
fp32 3.0e-6 / 8.4e-6, bf16 against the fp64 value 0.30% / 1.7%; forward differences: fp64 2.2e-9 /
1.2e-4 (FLUX with fp32's step), fp32 3.3e-5 / 1.0e-4, bf16 1.2% / 3.6%. The asserted tolerances are
those figures with a margin, within the error analysis' bounds (``routes.fd_step_rms``). On the CPU
the fused kernel is PyTorch's CPU SDPA; the ``gpu`` test runs the route under the flash /
memory-efficient CUDA kernels only (where forward AD would raise).
"""

from __future__ import annotations

import math

import pytest
import torch

from largemodel.models.load import load_model
from largemodel.models.routes import FD_SCHEMES, JACOBIAN_ROUTES, check_fd_scheme, check_route, fd_step_rms, resolve_route
from largemodel.models.tiny import build_tiny_folder
from largemodel.study import instability as ins
from largemodel.study import jacobian as jac
from largemodel.study import ode

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    return {fam: build_tiny_folder(root / fam, fam, with_vae=True) for fam in ("sd3", "flux")}


def _model(folder, dtype):
    state = torch.float64 if dtype == "float64" else torch.float32
    return load_model(folder, device="cpu", dtype=dtype, state_dtype=state)


def _z(m, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, *m.latent_shape(), generator=g, dtype=torch.float64).to(m.state_dtype)


def _rel(a, b):
    return float(((a - b).abs() / b.abs()).max())


def test_route_names_and_steps():
    assert JACOBIAN_ROUTES == ("auto", "math-jvp", "vjp-fd")
    assert resolve_route("auto", "cuda") == "vjp-fd" and resolve_route("auto", "cpu") == "math-jvp"
    assert resolve_route("math-jvp", "cuda") == "math-jvp"
    with pytest.raises(ValueError, match="--jacobian-route must be one of auto, math-jvp, vjp-fd"):
        check_route("fused")
    # central h_rms = (u / 64)^(1/3): fp32 2^-10 exactly, the others from their unit roundoff
    assert fd_step_rms("float32", "central") == pytest.approx(2.0**-10, rel=1e-12)
    assert fd_step_rms("torch.bfloat16", "central") == pytest.approx((2.0**-8 / 64) ** (1 / 3), rel=1e-12)
    # forward h_rms = (u / 4)^(1/2): fp32 2^-13, bf16 2^-5
    assert fd_step_rms("float32", "forward") == pytest.approx(2.0**-13, rel=1e-12)
    assert fd_step_rms("bfloat16") == pytest.approx(2.0**-5, rel=1e-12)  # the default scheme is forward
    for scheme in FD_SCHEMES:
        assert fd_step_rms("float64", scheme) < fd_step_rms("float32", scheme) < fd_step_rms("float16", scheme) \
            < fd_step_rms("bfloat16", scheme)
    assert FD_SCHEMES == ("forward", "central")
    with pytest.raises(ValueError, match="--fd-scheme must be one of forward, central, got 'central2'"):
        check_fd_scheme("central2")


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_hutchinson_by_vjp_equals_forward_mode_with_the_same_probes(folders, family):
    m = _model(folders[family], "float64")
    sig = m.sigmas(4)
    x = _z(m)
    runs = {r: ins.log_lambda_one_pass(m.velocity, x, sig, probes=2, generator=torch.Generator().manual_seed(3), route=r)
            for r in ("math-jvp", "vjp-fd")}
    assert _rel(runs["vjp-fd"]["log_det_G"], runs["math-jvp"]["log_det_G"]) < 1e-6
    torch.testing.assert_close(runs["vjp-fd"]["z"], runs["math-jvp"]["z"], rtol=1e-10, atol=1e-12)
    other = ins.log_lambda_one_pass(m.velocity, x, sig, probes=2, generator=torch.Generator().manual_seed(4), route="vjp-fd")
    assert _rel(other["log_det_G"], runs["math-jvp"]["log_det_G"]) > 1e-4  # other probes: another estimate


def _spy(m, log):
    def vel(x, s):
        log.append((torch.is_grad_enabled(), torch.backends.cuda.flash_sdp_enabled(), x.shape[0]))
        return m.velocity(x, s)

    return vel


#: central differences, ``h_rms = (u/64)^(1/3)``: error ``O(h^2)`` truncation and ``O(u / h)`` rounding (§10.6).
#: forward differences, ``h_rms = u^(1/2) / 2``: the error of ``J v`` is ``C_1 h_rms + r / h_rms`` with
#: ``C_1 <= 2``, ``r <= u`` (routes.fd_step_rms), at most ``3 u^(1/2)``: 3.2e-8 in fp64, 7.3e-4 in fp32.
#: FLUX's rotary embedding rounds to fp32 inside an fp64 model: its forward step is fp32's. Measured spectral
#: norm agreement (2026-12-08): central fp64 4.5e-12 (SD3) / 2.4e-5 (FLUX), fp32 3.0e-6 / 8.4e-6; forward fp64
#: 2.2e-9 (SD3) / 1.2e-4 (FLUX, fp32 step), fp32 3.3e-5 / 1.0e-4.
@pytest.mark.parametrize("family,dtype,central_tol,step_dtype,forward_tol", [
    ("sd3", "float64", 1e-9, torch.float64, 2e-8), ("flux", "float64", 1e-4, torch.float32, 7e-4),
    ("sd3", "float32", 3e-5, torch.float32, 3e-4), ("flux", "float32", 3e-5, torch.float32, 7e-4)])
def test_power_iteration_by_differences_agrees_with_forward_mode(folders, family, dtype, central_tol, step_dtype,
                                                                  forward_tol):
    """Both difference schemes of route vjp-fd against the math-kernel JVP's spectral norm (one reference)."""
    m = _model(folders[family], dtype)
    sig = m.sigmas(6)
    z = _z(m)
    ref = ins.spectral_norm_G(m.velocity, z, sig, iters=8, generator=torch.Generator().manual_seed(1))
    for scheme, net_dtype, tol, rows in (("central", m.dtype, central_tol, 4), ("forward", step_dtype, forward_tol, 2)):
        log = []
        fd = ins.spectral_norm_G(_spy(m, log), z, sig, iters=8, generator=torch.Generator().manual_seed(1),
                                 route="vjp-fd", network_dtype=net_dtype, fd_scheme=scheme)
        assert _rel(fd.value, ref.value) < tol, scheme
        assert all(flash for _, flash, _ in log)  # no call under the math kernel
        plain = [r for grad, _, r in log if not grad]
        # per iteration and evaluation: central's two difference rows of each image, forward's one (its base
        # value is the recorded velocity)
        assert plain == [rows] * (8 * 6), scheme
        # with a graph: the recorded regeneration, then each iteration's backward recomputing the 6 steps
        assert len(log) - len(plain) == 6 * (1 + 8), scheme


def _jv_error(m, z, v, ref, sig, h, scheme):
    _, jv = jac.fd_jvp_generate(m.velocity, z.to(m.state_dtype), v.to(m.state_dtype), sig, solver="euler", h=h,
                                scheme=scheme)
    return float(((jv.double() - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max())


def test_forward_differences_are_first_order_and_central_second_order(folders):
    """fp64, SD3 (no rounding at these steps): the error of ``J_G v`` falls 10x per 10x smaller step by
    forward differences (measured 1.5e-3, 1.5e-4, 1.5e-5 at h_rms 1e-2, 1e-3, 1e-4) and 100x by central ones."""
    m = _model(folders["sd3"], "float64")
    sig = m.sigmas(6)
    z = _z(m)
    v = ins.unit_directions(tuple(z.shape), torch.Generator().manual_seed(2), z)
    _, ref = jac.math_jvp(lambda y: ode.generate(m.velocity, y, sig), (z,), (v,))
    root_n = math.sqrt(z[0].numel())
    for scheme, factor in (("forward", 10.0), ("central", 100.0)):
        errs = [_jv_error(m, z, v, ref, sig, h_rms * root_n, scheme) for h_rms in (1e-2, 1e-3, 1e-4)]
        for big, small in zip(errs, errs[1:]):
            assert 0.7 * factor < big / small < 1.3 * factor, (scheme, errs)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_forward_difference_step_is_near_the_optimum_in_fp32(folders, family):
    """Along the top singular direction (the largest curvature), fp32: the step ``fd_step`` has less than
    half the error of 16x smaller (rounding) or 16x larger (truncation) steps; measured 4.0e-4 vs 6.3e-3 /
    1.1e-3 (SD3), 3.2e-4 vs 4.2e-3 / 2.9e-3 (FLUX), within the bound 3 u^(1/2) = 7.3e-4."""
    m64, m32 = _model(folders[family], "float64"), _model(folders[family], "float32")
    sig = m64.sigmas(6)
    z = _z(m64)
    top = ins.spectral_norm_G(m64.velocity, z, sig, iters=8, generator=torch.Generator().manual_seed(1)).vector
    _, ref = jac.math_jvp(lambda y: ode.generate(m64.velocity, y, sig), (z,), (top,))
    h = ins.fd_step(z, torch.float32, "forward")
    err = {k: _jv_error(m32, z, top, ref, sig, k * h, "forward") for k in (1 / 16, 1, 16)}
    assert err[1] < 7.3e-4
    assert err[1] < 0.5 * min(err[1 / 16], err[16]), err


def test_forward_differences_need_the_recorded_velocity(folders):
    """The base value of each difference is the velocity recorded with its point: recorded values off by
    one evaluation, or none, fail."""
    m = _model(folders["sd3"], "float64")
    sig = m.sigmas(6)
    z = _z(m)
    v = ins.unit_directions(tuple(z.shape), torch.Generator().manual_seed(2), z)
    _, ref = jac.math_jvp(lambda y: ode.generate(m.velocity, y, sig), (z,), (v,))
    rec = jac.TrajectoryRecorder(m.velocity, keep_velocity=True)
    with torch.no_grad():
        ode.generate(rec, z, sig)
    for x, s, u in rec.points:  # the recorded velocity is u at the recorded point
        torch.testing.assert_close(u, m.velocity(x, torch.tensor(s, dtype=x.dtype)), rtol=0, atol=0)
    h = ins.fd_step(z, scheme="forward")
    good = jac.fd_tangent(m.velocity, rec.points, v, sig, solver="euler", h=h, scheme="forward")
    assert _rel_norm(good, ref) < 1e-7
    shifted = [(x, s, rec.points[min(i + 1, len(rec.points) - 1)][2]) for i, (x, s, _) in enumerate(rec.points)]
    bad = jac.fd_tangent(m.velocity, shifted, v, sig, solver="euler", h=h, scheme="forward")
    assert _rel_norm(bad, ref) > 1.0
    with pytest.raises(RuntimeError, match="recorded velocities"):
        jac.fd_tangent(m.velocity, [(x, s, None) for x, s, _ in rec.points], v, sig, solver="euler", h=h, scheme="forward")
    with pytest.raises(ValueError, match="--fd-scheme must be one of forward, central, got 'backward'"):
        jac.fd_tangent(m.velocity, rec.points, v, sig, solver="euler", h=h, scheme="backward")


def _rel_norm(a, b):
    return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())


def test_fd_tangent_replays_heun_predictors(folders):
    """Heun's predictor points are recorded and replayed: ``J_G v`` by differences equals the JVP."""
    m = _model(folders["sd3"], "float64")
    sig = m.sigmas(3)
    z = _z(m)
    v = ins.unit_directions(tuple(z.shape), torch.Generator().manual_seed(2), z)
    for solver in ("heun", "heun-diffusers"):
        g = lambda y: ode.generate(m.velocity, y, sig, solver=solver)  # noqa: E731
        gz, jv = jac.math_jvp(g, (z,), (v,))
        for scheme, tol in (("central", 1e-8), ("forward", 3.2e-8)):  # forward: the bound 3 u^(1/2)
            gz_fd, jv_fd = jac.fd_jvp_generate(m.velocity, z, v, sig, solver=solver, h=ins.fd_step(z, scheme=scheme),
                                               scheme=scheme)
            torch.testing.assert_close(gz_fd, gz, rtol=1e-10, atol=1e-12)
            assert float((jv_fd - jv).flatten(1).norm(dim=1).max() / jv.flatten(1).norm(dim=1).min()) < tol
    with pytest.raises(RuntimeError, match="replayed on the point recorded"):
        jac.fd_tangent(m.velocity, [(z, 0.5, None)] * 3, v, sig, solver="euler", h=1e-3, scheme="central")


@pytest.mark.parametrize("family,tols", [("sd3", {"central": 0.01, "forward": 0.03}),
                                         ("flux", {"central": 0.03, "forward": 0.06})])
def test_bf16_route_within_percent_of_the_fp64_value(folders, family, tols):
    """bf16, against the fp64 value: central differences (``h_rms = 0.039``) within 1% (SD3) / 3% (FLUX)
    (measured 0.3% / 1.7%), forward differences (``h_rms = 0.031``) within 3% / 6% (measured 1.2% /
    3.6%), where the forward-mode route in bf16 is 0.1% / 0.2% off and 8 power iterations are 2.7-4.4%
    (SD3) / 1.2-4.9% (FLUX) from the value after 40 iterations."""
    m64, m16 = _model(folders[family], "float64"), _model(folders[family], "bfloat16")
    sig = m64.sigmas(6)
    z = _z(m64)
    ref = ins.spectral_norm_G(m64.velocity, z, sig, iters=8, generator=torch.Generator().manual_seed(1)).value
    for scheme, tol in tols.items():
        fd = ins.spectral_norm_G(m16.velocity, z.float(), sig, iters=8, generator=torch.Generator().manual_seed(1),
                                 route="vjp-fd", network_dtype=m16.dtype, fd_scheme=scheme).value
        assert _rel(fd, ref) < tol, scheme


def test_resolved_route_required(folders):
    m = _model(folders["sd3"], "float32")
    z = _z(m)
    with pytest.raises(ValueError, match="resolved route"):
        ins.log_lambda_one_pass(m.velocity, z, m.sigmas(2), route="auto")
    with pytest.raises(ValueError, match="finite-difference step"):
        jac.RegenerationLinearization(m.velocity, z, m.sigmas(2), "euler", route="vjp-fd")


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_vjp_fd_route_runs_on_the_fused_cuda_kernels(folders, family):
    """On CUDA, fp32, with only the memory-efficient (and flash) kernels allowed, where forward AD
    raises: route ``vjp-fd`` runs and agrees with the math-kernel JVP (spectral norm 1e-3,
    Hutchinson with the same probes 1e-4)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    m = load_model(folders[family], device="cuda", dtype="float32", state_dtype=torch.float32)
    sig = m.sigmas(6)
    z = _z(m).cuda()
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731  (draws on the CPU, as the study's)
    ref = ins.spectral_norm_G(m.velocity, z, sig, iters=8, generator=gen()).value
    ref_div = ins.log_lambda_one_pass(m.velocity, z, sig, probes=2, generator=gen())["log_det_G"]
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION]):
        fd = ins.spectral_norm_G(m.velocity, z, sig, iters=8, generator=gen(), route="vjp-fd", network_dtype=m.dtype).value
        div = ins.log_lambda_one_pass(m.velocity, z, sig, probes=2, generator=gen(), route="vjp-fd")["log_det_G"]
        with pytest.raises((NotImplementedError, RuntimeError)):  # forward AD has no fused kernel
            torch.func.jvp(lambda y: m.velocity(y, 0.5), (z,), (z,))
    assert _rel(fd, ref) < 1e-3
    assert _rel(div, ref_div) < 1e-4
    assert math.isfinite(float(fd.sum()))


def test_fd_scheme_is_validated_and_keys_the_records(tmp_path, capsys):
    """``--fd-scheme``: refused in one line naming the flag; part of the resume signature only where it
    changes a result (route ``vjp-fd`` possible and a ``J v`` by differences run)."""
    from largemodel.diagnose.explain import ExplainConfig
    from largemodel.study.config import StudyConfig
    from reports.cli import main

    for make in (StudyConfig, ExplainConfig):
        with pytest.raises(ValueError, match="^--fd-scheme must be one of forward, central, got 'backward'$"):
            make(fd_scheme="backward")
    assert StudyConfig(power_iters=3).signature_params()["fd_scheme"] == "forward"
    assert StudyConfig(power_iters=3, fd_scheme="central").signature_params()["fd_scheme"] == "central"
    assert "fd_scheme" not in StudyConfig(power_iters=0).signature_params()
    assert "fd_scheme" not in StudyConfig(power_iters=3, jacobian_route="math-jvp").signature_params()
    assert ExplainConfig().signature_params()["fd_scheme"] == "forward"
    assert "fd_scheme" not in ExplainConfig(jacobian_route="math-jvp").signature_params()
    for command in ("study", "explain"):
        rc = main(["largemodel", command, "--model", str(tmp_path), "--images", str(tmp_path), "--out",
                   str(tmp_path / "o"), "--fd-scheme", "backward"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "--fd-scheme" in err[0] and "invalid choice" in err[0], err
    assert not (tmp_path / "o").exists()


def test_study_records_the_scheme_and_agrees_across_routes(folders, tmp_path):
    """``run_study`` with ``--power-iters``: route ``vjp-fd`` by either scheme against ``math-jvp`` on the
    same images, fp32 (the forward scheme's bound 3 u^(1/2) = 7.3e-4); the records name the scheme."""
    from largemodel.study.runner import StudyConfig, load_records, run_study
    from lm_fixtures import random_items

    m = _model(folders["sd3"], "float32")
    values = {}
    for route, scheme in (("math-jvp", "forward"), ("vjp-fd", "forward"), ("vjp-fd", "central")):
        out = tmp_path / f"{route}-{scheme}"
        cfg = StudyConfig(steps=4, perturbations=1, jvp_directions=0, power_iters=4, jacobian_route=route,
                          fd_scheme=scheme, images_per_batch=2)
        run_study(m, random_items(2), out, cfg, progress=False, save_images=False)
        recs = sorted(load_records(out), key=lambda r: r["key"])
        assert [r.get("fd_scheme") for r in recs] == [scheme if route == "vjp-fd" else None] * 2
        values[route, scheme] = torch.tensor([r["spectral_norm"] for r in recs], dtype=torch.float64)
    ref = values["math-jvp", "forward"]
    assert _rel(values["vjp-fd", "forward"], ref) < 7.3e-4 and _rel(values["vjp-fd", "central"], ref) < 3e-5
