"""The fused-kernel routes of the Jacobian products (docs/theory.md §10.6, issue 27 item 5).

Route ``vjp-fd`` (Hutchinson's ``e^T J_u e`` by one VJP per probe; power iteration's ``J_G v`` by
central differences of the velocity along the recorded trajectory, ``J_G^T w`` by reverse mode)
against route ``math-jvp`` (forward-mode AD under the math attention kernel) on tiny SD3 and FLUX
models built from configs. Measured agreement (2026-12-07, 2-core CPU): Hutchinson, same probes,
fp64: 1.6e-15 (SD3), 3.2e-8 (FLUX; its rotary embedding rounds to fp32 inside an fp64 model);
spectral norm, 8 iterations, same start: fp64 2.5e-12 / 2.4e-5, fp32 3.2e-6 / 8.0e-6; bf16 against
the fp64 value 0.08% / 1.7%. The asserted tolerances are those figures with a margin. On the CPU
the fused kernel is PyTorch's CPU SDPA; the ``gpu`` test runs the route under the flash /
memory-efficient CUDA kernels only (where forward AD would raise).
"""

from __future__ import annotations

import math

import pytest
import torch

from largemodel.models.load import load_model
from largemodel.models.routes import JACOBIAN_ROUTES, check_route, fd_step_rms, resolve_route
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
    # h_rms = (u / 64)^(1/3): fp32 2^-10 exactly, the others from their unit roundoff
    assert fd_step_rms("float32") == pytest.approx(2.0**-10, rel=1e-12)
    assert fd_step_rms("torch.bfloat16") == pytest.approx((2.0**-8 / 64) ** (1 / 3), rel=1e-12)
    assert fd_step_rms("float64") < fd_step_rms("float32") < fd_step_rms("float16") < fd_step_rms("bfloat16")


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


@pytest.mark.parametrize("family,dtype,tol", [("sd3", "float64", 1e-9), ("flux", "float64", 1e-4),
                                              ("sd3", "float32", 3e-5), ("flux", "float32", 3e-5)])
def test_power_iteration_by_central_differences_agrees_with_forward_mode(folders, family, dtype, tol):
    m = _model(folders[family], dtype)
    sig = m.sigmas(6)
    z = _z(m)
    ref = ins.spectral_norm_G(m.velocity, z, sig, iters=8, generator=torch.Generator().manual_seed(1))
    log = []
    fd = ins.spectral_norm_G(_spy(m, log), z, sig, iters=8, generator=torch.Generator().manual_seed(1),
                             route="vjp-fd", network_dtype=m.dtype)
    assert _rel(fd.value, ref.value) < tol
    assert all(flash for _, flash, _ in log)  # no call under the math kernel
    plain = [rows for grad, _, rows in log if not grad]
    assert plain == [4] * (8 * 6)  # per iteration and evaluation: the two difference rows of each image


def test_fd_tangent_replays_heun_predictors(folders):
    """Heun's predictor points are recorded and replayed: ``J_G v`` by differences equals the JVP."""
    m = _model(folders["sd3"], "float64")
    sig = m.sigmas(3)
    z = _z(m)
    v = ins.unit_directions(tuple(z.shape), torch.Generator().manual_seed(2), z)
    for solver in ("heun", "heun-diffusers"):
        g = lambda y: ode.generate(m.velocity, y, sig, solver=solver)  # noqa: E731
        gz, jv = jac.math_jvp(g, (z,), (v,))
        gz_fd, jv_fd = jac.fd_jvp_generate(m.velocity, z, v, sig, solver=solver, h=ins.fd_step(z))
        torch.testing.assert_close(gz_fd, gz, rtol=1e-10, atol=1e-12)
        assert float((jv_fd - jv).flatten(1).norm(dim=1).max() / jv.flatten(1).norm(dim=1).min()) < 1e-8
    with pytest.raises(RuntimeError, match="replayed on the point recorded"):
        jac.fd_tangent(m.velocity, [(z, 0.5)] * 3, v, sig, solver="euler", h=1e-3)


@pytest.mark.parametrize("family,tol", [("sd3", 0.01), ("flux", 0.03)])
def test_bf16_route_within_percent_of_the_fp64_value(folders, family, tol):
    """bf16 central differences (``h_rms = 0.039``): within 1% (SD3) / 3% (FLUX) of the fp64 value
    (measured 0.08% / 1.7%), where the forward-mode route in bf16 is 0.1% / 0.2% off."""
    m64, m16 = _model(folders[family], "float64"), _model(folders[family], "bfloat16")
    sig = m64.sigmas(6)
    z = _z(m64)
    ref = ins.spectral_norm_G(m64.velocity, z, sig, iters=8, generator=torch.Generator().manual_seed(1)).value
    fd = ins.spectral_norm_G(m16.velocity, z.float(), sig, iters=8, generator=torch.Generator().manual_seed(1),
                             route="vjp-fd", network_dtype=m16.dtype).value
    assert _rel(fd, ref) < tol


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
