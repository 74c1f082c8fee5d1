"""largemodel/: loader, sigma grids, velocity conventions, solvers and instability estimators,
on tiny random SD3 / SD3.5 / FLUX folders saved and loaded back through the users' loader."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from largemodel.study import instability as ins
from largemodel.study import ode
from largemodel.models.folder import ModelFolderError, inspect_folder
from largemodel.models.load import load_model, math_attention
from largemodel.models.tiny import FAMILIES, build_tiny_folder

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {}
    for fam in FAMILIES:
        out[(fam, False)] = build_tiny_folder(root / f"{fam}-pixel", fam, with_vae=False)
        out[(fam, True)] = build_tiny_folder(root / f"{fam}-vae", fam, with_vae=True)
    return out


def _load64(path):
    return load_model(path, device="cpu", dtype="float64", state_dtype=torch.float64)


def _x(shape=(2, 3, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1


# ---- folders -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_family_read_from_config(folders, family):
    info = inspect_folder(folders[(family, True)])
    assert info.family == family
    assert info.has_vae and not inspect_folder(folders[(family, False)]).has_vae


def test_folder_errors(folders, tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        inspect_folder(tmp_path / "nope")
    with pytest.raises(ModelFolderError, match="not a diffusers model folder"):
        inspect_folder(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(folders[("sd3", False)], bad)
    index = json.loads((bad / "model_index.json").read_text())
    (bad / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ModelFolderError, match="unsupported model 'StableDiffusionXLPipeline'"):
        inspect_folder(bad)
    (bad / "model_index.json").write_text(json.dumps(index))
    for f in (bad / "transformer").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(ModelFolderError, match="safetensors"):
        inspect_folder(bad)
    for f in (bad / "transformer").glob("*.bin"):
        f.rename(f.with_suffix(".safetensors"))
    (bad / "null_prompt.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="null-prompt"):
        inspect_folder(bad)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_load_casts_every_tensor_quietly(folders, family, dtype, caplog):
    """Every floating parameter and buffer (transformer and VAE) ends in the asked dtype, and
    diffusers logs no warning about the cast."""
    import logging

    with caplog.at_level(logging.WARNING):
        m = load_model(folders[(family, True)], device="cpu", dtype=dtype)
    for module in (m.transformer, m.vae):
        wrong = [n for n, t in [*module.named_parameters(), *module.named_buffers()]
                 if t.is_floating_point() and t.dtype != dtype]
        assert not wrong, wrong[:5]
    assert m.prompt_embeds.dtype == dtype
    assert not [r for r in caplog.records if "float32" in r.getMessage()]


def test_cast_keeps_fp32_modules():
    """``_keep_in_fp32_modules`` (diffusers' convention) stays float32; everything else is cast."""
    from largemodel.models.load import _cast

    class Net(torch.nn.Module):
        _keep_in_fp32_modules = ["norm"]

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 3)
            self.norm = torch.nn.LayerNorm(3)
            self.register_buffer("scale", torch.ones(3))
            self.register_buffer("index", torch.arange(3))

    net = _cast(Net(), torch.device("cpu"), torch.bfloat16)
    assert net.proj.weight.dtype == net.proj.bias.dtype == net.scale.dtype == torch.bfloat16
    assert net.norm.weight.dtype == net.norm.bias.dtype == torch.float32
    assert net.index.dtype == torch.int64


def test_bad_resolution_and_dtype(folders):
    with pytest.raises(ValueError, match="resolution must be a positive multiple of 4"):
        load_model(folders[("sd3", True)], device="cpu", resolution=18)
    with pytest.raises(ValueError, match="dtype"):
        load_model(folders[("sd3", True)], device="cpu", dtype="int8")


# ---- sigma grids and velocity conventions -------------------------------------------------


def test_sigma_grid_sd3_matches_scheduler(folders):
    from diffusers import FlowMatchEulerDiscreteScheduler

    m = load_model(folders[("sd3.5", True)], device="cpu")
    for steps in (1, 7, 500):
        ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
        ref.set_timesteps(steps)
        np.testing.assert_allclose(m.sigmas(steps).numpy(), ref.sigmas.double().numpy(), rtol=0, atol=0)
        assert m.sigmas(steps)[0] == 1.0 and m.sigmas(steps)[-1] == 0.0


def test_sigma_grid_flux_dynamic_shift(folders):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    m = load_model(folders[("flux", True)], device="cpu")
    steps, seq = 20, (8 // 2) * (8 // 2)
    mu = calculate_shift(seq, 256, 4096, 0.5, 1.15)
    base = np.linspace(1.0, 1.0 / steps, steps)
    shifted = math.exp(mu) / (math.exp(mu) + (1 / base - 1))  # the scheduler's exponential time shift
    np.testing.assert_allclose(m.sigmas(steps)[:-1].numpy(), shifted, rtol=1e-6)


def test_flux_packing_matches_diffusers(folders):
    from diffusers import FluxPipeline

    m = _load64(folders[("flux", True)])
    x = _x((2, 4, 8, 8))
    packed = FluxPipeline._pack_latents(x, 2, 4, 8, 8)
    ids = FluxPipeline._prepare_latent_image_ids(2, 4, 4, "cpu", torch.float64)
    raw = m.transformer(
        hidden_states=packed, timestep=torch.full((2,), 0.3, dtype=torch.float64),
        guidance=torch.full((2,), 3.5), pooled_projections=m.pooled_prompt_embeds.expand(2, -1),
        encoder_hidden_states=m.prompt_embeds.expand(2, -1, -1),
        txt_ids=torch.zeros(m.prompt_embeds.shape[1], 3, dtype=torch.float64), img_ids=ids, return_dict=False,
    )[0]
    expected = FluxPipeline._unpack_latents(raw, 16, 16, 2)
    torch.testing.assert_close(m.velocity(x, 0.3), expected, rtol=1e-12, atol=1e-12)


def test_sd3_timestep_is_1000_sigma(folders):
    m = _load64(folders[("sd3", False)])
    x = _x()
    raw = m.transformer(hidden_states=x, timestep=torch.full((2,), 250.0, dtype=torch.float64),
                        encoder_hidden_states=m.prompt_embeds.expand(2, -1, -1),
                        pooled_projections=m.pooled_prompt_embeds.expand(2, -1), return_dict=False)[0]
    torch.testing.assert_close(m.velocity(x, 0.25), raw)


def test_vae_encode_decode_conventions(folders):
    m = load_model(folders[("sd3", True)], device="cpu")
    img = _x((1, 3, 16, 16)).float()
    lat = m.encode(img)
    raw = m.vae.encode(img).latent_dist.mode()
    torch.testing.assert_close(lat, (raw - 0.1) * 1.5)
    assert m.decode(lat).shape == img.shape and float(m.decode(lat).abs().max()) <= 1.0
    with pytest.raises(ValueError, match="images must have shape"):
        m.encode(img[:, :1])


# ---- solvers --------------------------------------------------------------------------------


def _roundtrip(m, x, steps, solver):
    s = m.sigmas(steps)
    return float((ode.generate(m.velocity, ode.invert(m.velocity, x, s, solver=solver), s, solver=solver) - x).norm())


@pytest.mark.parametrize("family", FAMILIES)
def test_roundtrip_error_first_order_euler_second_order_heun(folders, family):
    m = _load64(folders[(family, False)])
    x = _x()
    e = [_roundtrip(m, x, n, "euler") for n in (10, 20, 40)]
    assert 1.8 < e[0] / e[1] < 2.2 and 1.8 < e[1] / e[2] < 2.2, e
    h = [_roundtrip(m, x, n, "heun") for n in (10, 20)]
    assert h[0] / h[1] > 3.0 and h[1] < e[1] / 50, (h, e)


def test_solver_input_errors(folders):
    m = _load64(folders[("sd3", False)])
    s = m.sigmas(4)
    with pytest.raises(ValueError, match="solver must be one of"):
        ode.generate(m.velocity, _x(), s, solver="rk45")
    with pytest.raises(ValueError, match="strictly decreasing"):
        ode.generate(m.velocity, _x(), s.flip(0))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        m.sigmas(0)


# ---- instability ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_jvp_matches_finite_differences(folders, family):
    m = _load64(folders[(family, False)])
    s = m.sigmas(6)
    z = ode.invert(m.velocity, _x(), s)
    dirs = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lam = ins.jvp_lambda(m.velocity, z, s, dirs)
    h = 1e-3
    fd = torch.stack([
        (ode.generate(m.velocity, z + h * d, s) - ode.generate(m.velocity, z - h * d, s)).flatten(1).norm(dim=1) / (2 * h * d.norm())
        for d in dirs
    ], 1)
    torch.testing.assert_close(lam, fd, rtol=1e-5, atol=0)


def test_mu_tends_to_lambda_on_the_same_directions(folders):
    m = _load64(folders[("sd3", False)])
    s = m.sigmas(5)
    z = ode.invert(m.velocity, _x(), s)
    k = 3
    mu = ins.averaged_instability(m.velocity, z, s, num_perturbations=k, eps_rms=1e-7, generator=torch.Generator().manual_seed(4))
    dirs = ins.unit_directions((2 * k, 3, 8, 8), torch.Generator().manual_seed(4), z).view(2, k, 3, 8, 8)
    lam = ins.jvp_lambda(m.velocity, z, s, dirs)
    torch.testing.assert_close(mu, lam, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="--eps-rms"):
        ins.averaged_instability(m.velocity, z, s, eps_rms=-1.0)


def test_power_iteration_reaches_the_top_singular_value(folders):
    m = _load64(folders[("sd3.5", False)])
    s = m.sigmas(3)
    z = ode.invert(m.velocity, _x((1, 3, 8, 8)), s)
    with math_attention():
        jac = torch.func.jacfwd(lambda y: ode.generate(m.velocity, y.view(1, 3, 8, 8), s).flatten())(z.flatten())
    sv = torch.linalg.svdvals(jac)
    top = float(sv[0])
    sn = ins.spectral_norm_G(m.velocity, z, s, iters=60, generator=torch.Generator().manual_seed(0))
    est, hist = sn.value, sn.history
    assert bool((hist.diff(dim=0) >= -1e-9).all())  # power iteration increases monotonically
    assert float(est[0]) <= top * (1 + 1e-9)
    assert float(est[0]) > 0.99 * top


def test_log_lambda_three_ways(folders):
    m = _load64(folders[("flux", False)])
    x = _x((1, 3, 8, 8))
    gaps = []
    for steps in (6, 24):
        s = m.sigmas(steps)
        one = ins.log_lambda_one_pass(m.velocity, x, s, exact=True)
        jac = ins.log_lambda_jacobian(m.velocity, one["z"], s)
        gaps.append(abs(float(one["log_Lambda"][0] - jac[0])))
        # Lemma D.1 bookkeeping: log p_g(x) = log phi(z) - n log Lambda
        n = x[0].numel()
        torch.testing.assert_close(one["log_p_g"], ins.log_standard_normal(one["z"]) - n * one["log_Lambda"])
    assert gaps[1] < gaps[0] / 2, gaps  # the one-pass (continuous) value and the discrete G converge
    hut = ins.log_lambda_one_pass(m.velocity, x, s, probes=256, generator=torch.Generator().manual_seed(0))
    assert abs(float(hut["log_Lambda"][0] - one["log_Lambda"][0])) < 0.1 * abs(float(one["log_Lambda"][0]))
    torch.testing.assert_close(hut["z"], one["z"])


# ---- issue 18: the shared step arithmetic keeps diffusers' conventions bit for bit -------------


@pytest.mark.parametrize("solver", ["euler", "heun", "heun-diffusers"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sigma_grid_steps_pinned_to_the_pre_merge_arithmetic(solver, dtype):
    """``largemodel.study.ode`` steps with ``simulate.solvers.steps``' increments, yet runs exactly the
    operations of its own pre-merge code: ``h = (s1 - s0).to(x.dtype)`` from the float64 grid,
    ``x + h u`` and ``x + 0.5 h (u0 + u1)``, Euler on the step touching sigma = 0 for
    heun-diffusers; every value compared with ``torch.equal``."""
    w = torch.randn(12, 12, generator=torch.Generator().manual_seed(1)).to(dtype) / 3

    def vel(x, s):
        return torch.tanh(x @ w) * (1 + s.to(x.dtype)) - x

    sig = torch.cat([torch.linspace(1.0, 0.02, 6, dtype=torch.float64) ** 1.7, torch.zeros(1, dtype=torch.float64)])
    z = torch.randn(3, 12, generator=torch.Generator().manual_seed(2)).to(dtype)

    def reference(x, grid):
        for s0, s1 in zip(grid[:-1], grid[1:]):
            h = (s1 - s0).to(x.dtype)
            euler = solver == "euler" or (solver == "heun-diffusers" and (float(s0) == 0.0 or float(s1) == 0.0))
            if euler:
                x = x + h * vel(x, s0)
            else:
                u0 = vel(x, s0)
                u1 = vel(x + h * u0, s1)
                x = x + 0.5 * h * (u0 + u1)
        return x

    assert torch.equal(ode.generate(vel, z, sig, solver=solver), reference(z, sig))
    assert torch.equal(ode.invert(vel, z, sig, solver=solver), reference(z, sig.flip(0)))
    assert ode.nfe_per_map(solver, 6) == {"euler": 6, "heun": 12, "heun-diffusers": 11}[solver]
