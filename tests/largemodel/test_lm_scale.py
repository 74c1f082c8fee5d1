"""largemodel/ at real scale (issue 14) and a quiet loader (issue 17), on tiny random folders.

The timesteps the transformer receives equal the diffusers pipelines', element by element, in
fp32 and bf16, SD3 and FLUX; ``heun-diffusers`` matches ``FlowMatchHeunDiscreteScheduler``;
power iteration's reverse pass runs on the default attention kernels with the same estimate;
JVP rows are chunked by ``batch_size``; the central-difference lambda agrees with the JVP; the
null prompt is encoded before the transformer is loaded and cached; loading prints nothing from
third parties; the cost plan and its memory model.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from largemodel.study import instability as ins
from largemodel.models import load as lm_model
from largemodel.study import ode
from largemodel.models.load import load_model, math_attention
from largemodel.models.tiny import build_tiny_folder

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    return {fam: build_tiny_folder(root / fam, fam, with_vae=True) for fam in ("sd3", "flux")}


def _z(m, b=1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, *m.latent_shape(), generator=g, dtype=dtype)


# ---- timesteps as the pipelines feed them --------------------------------------------------------


def _spy_timesteps(transformer):
    seen = []
    orig = transformer.forward

    def forward(*args, **kwargs):
        seen.append(kwargs["timestep"].detach().clone())
        return orig(*args, **kwargs)

    transformer.forward = forward
    return seen, lambda: setattr(transformer, "forward", orig)


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_timesteps_equal_the_pipelines(folders, family, dtype):
    import diffusers

    m = load_model(folders[family], device="cpu", dtype=dtype)
    steps = 7
    seen, undo = _spy_timesteps(m.transformer)
    try:
        with torch.no_grad():
            ode.generate(m.velocity, _z(m, dtype=torch.float32), m.sigmas(steps))
        ours = list(seen)
        seen.clear()
        sched = diffusers.FlowMatchEulerDiscreteScheduler.from_config(m.scheduler_config)
        common = dict(scheduler=sched, vae=m.vae, transformer=m.transformer, text_encoder=None, tokenizer=None,
                      text_encoder_2=None, tokenizer_2=None)
        if family == "flux":
            pipe = diffusers.FluxPipeline(**common)
            kw = {"guidance_scale": m.guidance}
        else:
            pipe = diffusers.StableDiffusion3Pipeline(**common, text_encoder_3=None, tokenizer_3=None)
            kw = {"guidance_scale": 1.0}
        with torch.no_grad():
            pipe(prompt_embeds=m.prompt_embeds, pooled_prompt_embeds=m.pooled_prompt_embeds, num_inference_steps=steps,
                 height=m.resolution, width=m.resolution, output_type="latent", **kw)
        theirs = list(seen)
    finally:
        undo()
    assert len(ours) == len(theirs) == steps
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    if family == "sd3":  # fp32 whatever the model's dtype: 1000 sigma is not rounded to bf16
        assert ours[0].dtype == torch.float32
    else:
        assert ours[0].dtype == dtype


def test_sd3_bf16_timesteps_stay_distinct(folders):
    """500 steps: every step sees its own timestep (bf16 rounding merged 249 of them)."""
    m = load_model(folders["sd3"], device="cpu", dtype=torch.bfloat16)
    sig = m.sigmas(500)[:-1]
    ts = m.timestep(sig.to(torch.float32))
    assert ts.dtype == torch.float32 and ts.unique().numel() == 500


# ---- diffusers-compatible Heun -------------------------------------------------------------------


def test_heun_diffusers_matches_the_scheduler(folders):
    from diffusers import FlowMatchHeunDiscreteScheduler

    m = load_model(folders["sd3"], device="cpu", dtype=torch.float32)
    steps = 6
    sched = FlowMatchHeunDiscreteScheduler.from_config(m.scheduler_config)
    sched.set_timesteps(steps)
    assert len(sched.timesteps) == 2 * steps - 1
    x0 = _z(m, b=2, dtype=torch.float32)
    x = x0.clone()
    with torch.no_grad():
        for t, s in zip(sched.timesteps, sched.sigmas[:-1]):  # evaluations at s0, s1, s1, ..., s_{N-1}
            x = sched.step(m.velocity(x, s), t, x).prev_sample
    grid = torch.cat([sched.sigmas[:-1:2], sched.sigmas[-1:]]).to(torch.float64)
    torch.testing.assert_close(grid, m.sigmas(steps), rtol=0, atol=0)
    calls = []
    vel = lambda y, s: (calls.append(1), m.velocity(y, s))[1]  # noqa: E731
    with torch.no_grad():
        ours = ode.generate(vel, x0, grid, solver="heun-diffusers")
    assert len(calls) == 2 * steps - 1 == ode.nfe_per_map("heun-diffusers", steps)
    rel = float((ours - x).norm() / x.norm())
    assert rel <= 1e-6
    with torch.no_grad():  # pfode's Heun (the default) differs on the last step only
        assert float((ode.generate(m.velocity, x0, grid, solver="heun") - x).norm() / x.norm()) > 1e-4


def test_heun_diffusers_inversion_and_log_lambda(folders):
    """The reversed map uses Euler on its first step (from sigma = 0); the one-pass Liouville
    quadrature follows it (same z as ``invert``)."""
    m = load_model(folders["sd3"], device="cpu", dtype="float64", state_dtype=torch.float64)
    sig = m.sigmas(5)
    x = _z(m, b=1)
    with torch.no_grad():
        z = ode.invert(m.velocity, x, sig, solver="heun-diffusers")
    one = ins.log_lambda_one_pass(m.velocity, x, sig, solver="heun-diffusers", exact=True)
    torch.testing.assert_close(one["z"], z, rtol=1e-12, atol=1e-12)


# ---- estimators ----------------------------------------------------------------------------------


def test_power_iteration_vjp_runs_on_default_kernels_with_the_same_estimate(folders):
    m = load_model(folders["sd3"], device="cpu", dtype="float64", state_dtype=torch.float64)
    sig = m.sigmas(4)
    z = _z(m, b=2)
    log = []

    def vel(x, s):
        log.append((torch.is_grad_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return m.velocity(x, s)

    est = ins.spectral_norm_G(vel, z, sig, iters=3, generator=torch.Generator().manual_seed(1)).value
    grad_calls = [flash for grad, flash in log if grad]
    jvp_calls = [flash for grad, flash in log if not grad]
    assert grad_calls and all(grad_calls)  # graph and VJP recomputation: fused kernels allowed
    assert jvp_calls and not any(jvp_calls)  # forward-mode AD: math kernel only
    with math_attention():  # the old behaviour: everything under the math kernel
        old = ins.spectral_norm_G(m.velocity, z, sig, iters=3, generator=torch.Generator().manual_seed(1)).value
    torch.testing.assert_close(est, old, rtol=1e-12, atol=0)


def test_jvp_rows_chunked_by_batch_size(folders):
    m = load_model(folders["flux"], device="cpu", dtype="float64", state_dtype=torch.float64)
    sig = m.sigmas(3)
    z = _z(m, b=2)
    dirs = ins.unit_directions((2 * 3, *z.shape[1:]), torch.Generator().manual_seed(2), z).view(2, 3, *z.shape[1:])
    rows = []
    vel = lambda x, s: (rows.append(x.shape[0]), m.velocity(x, s))[1]  # noqa: E731
    chunked = ins.jvp_lambda(vel, z, sig, dirs, batch_size=4)
    assert max(rows) == 4 and sorted(set(rows)) == [2, 4] and sum(rows) == 6 * 3
    rows.clear()
    whole = ins.jvp_lambda(vel, z, sig, dirs)
    assert set(rows) == {6}
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="--batch-size"):
        ins.jvp_lambda(m.velocity, z, sig, dirs, batch_size=0)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap over the CPU attention backward
def test_jvp_lambda_and_log_lambda_jacobian_agree_with_reverse_mode(folders):
    """``jvp_lambda`` / ``log_lambda_jacobian`` are ``theory.coefficients.lambda_f`` / ``log_Lambda_f``
    with the math-attention JVP (docs/theory.md §12); reverse mode on the same regeneration (double
    backward for ``J u``, VJP rows for the Jacobian) is an independent route to the same numbers."""
    from theory.coefficients import lambda_f, log_Lambda_f

    m = load_model(folders["sd3"], device="cpu", dtype="float64", state_dtype=torch.float64)
    sig = m.sigmas(3)
    z = _z(m, b=2)
    dirs = ins.unit_directions((2 * 2, *z.shape[1:]), torch.Generator().manual_seed(2), z).view(2, 2, *z.shape[1:])
    g = lambda y: ode.generate(m.velocity, y, sig)  # noqa: E731
    lam = ins.jvp_lambda(m.velocity, z, sig, dirs, batch_size=3)
    with math_attention():  # the fused CPU kernel has no double backward
        rev = lambda_f(g, z.repeat_interleave(2, dim=0), dirs.reshape(4, *z.shape[1:]), mode="reverse").view(2, 2)
    assert lam.dtype == torch.float64
    torch.testing.assert_close(lam, rev, rtol=1e-12, atol=0)
    ll = ins.log_lambda_jacobian(m.velocity, z[:1], sig, chunk=100)
    torch.testing.assert_close(ll, log_Lambda_f(g, z[:1]), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="u must be non-zero"):
        ins.jvp_lambda(m.velocity, z, sig, torch.zeros_like(dirs))


def test_jvp_reductions_reduced_changes_only_the_bf16_rounding(folders):
    """``--jvp-reductions reduced``: the JVP's attention reduces in bf16 (the math kernel otherwise
    upcasts to fp32); lambda moves by bf16 rounding only, the setting is restored, fp32 is untouched."""
    from largemodel.models.flow_model import jvp_reductions

    sig_steps = 5
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        m = load_model(folders["sd3"], device="cpu", dtype=dtype)
        sig = m.sigmas(sig_steps)
        z = _z(m, b=2, dtype=torch.float32)
        dirs = ins.unit_directions((2 * 2, *z.shape[1:]), torch.Generator().manual_seed(3), z).view(2, 2, *z.shape[1:])
        before = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
        for mode in ("fp32", "reduced"):
            with jvp_reductions(mode):
                assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed() == (mode == "reduced")
                out[dtype, mode] = ins.jvp_lambda(m.velocity, z, sig, dirs)
            assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed() == before
    bf_fp32, bf_red = out[torch.bfloat16, "fp32"], out[torch.bfloat16, "reduced"]
    assert not torch.equal(bf_fp32, bf_red)  # the option acts on a bf16 model
    assert float(((bf_red - bf_fp32).abs() / bf_fp32).max()) <= 5e-3  # bf16 rounding (7e-5 measured), not another map
    assert torch.equal(out[torch.float32, "fp32"], out[torch.float32, "reduced"])  # fp32: no effect
    with pytest.raises(ValueError, match="--jvp-reductions"):
        with jvp_reductions("fp16"):
            pass


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fd_lambda_agrees_with_jvp(folders, family, dtype):
    m = load_model(folders[family], device="cpu", dtype=dtype, state_dtype=dtype)
    sig = m.sigmas(10)
    g = torch.Generator().manual_seed(0)
    z = _z(m, b=2, dtype=dtype)
    dirs = ins.unit_directions((2 * 3, *z.shape[1:]), g, z).view(2, 3, *z.shape[1:])
    jvp = ins.jvp_lambda(m.velocity, z, sig, dirs)
    fd = ins.fd_lambda(m.velocity, z, sig, dirs, eps_rms=1e-2, batch_size=5)
    assert fd.shape == jvp.shape == (2, 3)
    assert float(((fd - jvp).abs() / jvp).max()) <= 1e-3


def test_study_fd_lambda_rides_with_the_mu_rows(folders):
    """``lambda_method="fd"``: the 2D difference rows go through the same calls as the K + 1
    regenerations, and the recorded lambda matches the JVP's on the same directions."""
    from largemodel.study.runner import StudyConfig, _study_group

    m = load_model(folders["sd3"], device="cpu", dtype="float64", state_dtype=torch.float64)
    sig = m.sigmas(4)
    images = torch.rand(1, 3, m.resolution, m.resolution, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    recs = {}
    for method in ("fd", "jvp"):
        cfg = StudyConfig(steps=4, perturbations=3, jvp_directions=2, lambda_method=method, batch_size=8)
        rows = []
        orig = m.velocity
        m.velocity = lambda x, s: (rows.append(x.shape[0]), orig(x, s))[1]  # noqa: E731
        try:
            recs[method], _, _ = _study_group(m, cfg, images, sig, torch.Generator().manual_seed(4))
        finally:
            del m.velocity
        if method == "fd":
            assert rows.count(8) == 4  # 1 + 3 + 2*2 = 8 rows: one call per step for everything
    assert recs["fd"][0]["lambda_method"] == "fd" and recs["jvp"][0]["lambda_method"] == "jvp"
    assert recs["fd"][0]["mu_bar"] == recs["jvp"][0]["mu_bar"]
    assert math.isclose(recs["fd"][0]["lambda_jvp"], recs["jvp"][0]["lambda_jvp"], rel_tol=1e-3)


def test_exact_log_lambda_refused_above_the_limit():
    big = torch.zeros(1, 16, 17, 17)  # n = 4,624 > 4,096
    sig = torch.linspace(1, 0, 11, dtype=torch.float64)
    calls = []
    vel = lambda x, s: (calls.append(1), -x)[1]  # noqa: E731
    with pytest.raises(ValueError, match=r"--log-lambda exact .*4,624 JVP rows per network evaluation, 46,240 per image"):
        ins.log_lambda_one_pass(vel, big, sig, exact=True)
    with pytest.raises(ValueError, match="--log-lambda exact"):
        ins.log_lambda_jacobian(vel, big, sig)
    assert not calls


# ---- loading: encoders first, cached; nothing from third parties ------------------------------


def test_null_prompt_encoded_before_the_transformer_and_cached(folders, tmp_path, monkeypatch):
    import diffusers

    from largemodel.models import prompts as prompts_mod

    info = lm_model.inspect_folder(folders["sd3"])
    no_file = dataclasses.replace(info, null_prompt_file=None, has_text_encoders=True)
    monkeypatch.setattr(lm_model, "inspect_folder", lambda path: no_file)
    order = []
    embeds, pooled = torch.randn(1, 5, 32), torch.randn(1, 64)

    def fake_encoders(info, prompts, device, dtype):
        order.append("encoders")
        return {p: (embeds.clone(), pooled.clone()) for p in prompts}

    real = diffusers.SD3Transformer2DModel.from_pretrained

    def spy_transformer(*args, **kwargs):
        order.append("transformer")
        return real(*args, **kwargs)

    monkeypatch.setattr(prompts_mod, "_from_encoders", fake_encoders)
    monkeypatch.setattr(diffusers.SD3Transformer2DModel, "from_pretrained", spy_transformer)
    m1 = load_model(folders["sd3"], device="cpu", dtype="float32", prompt_cache=tmp_path / "out")
    assert order == ["encoders", "transformer"]
    assert len(list((tmp_path / "out" / prompts_mod.PROMPT_CACHE_DIR).glob("*.safetensors"))) == 1
    order.clear()
    m2 = load_model(folders["sd3"], device="cpu", dtype="float32", prompt_cache=tmp_path / "out")
    assert order == ["transformer"]  # the cache: no encoder this time
    torch.testing.assert_close(m2.prompt_embeds, m1.prompt_embeds, rtol=0, atol=0)
    order.clear()
    load_model(folders["sd3"], device="cpu", dtype="bfloat16", prompt_cache=tmp_path / "out")
    assert order == ["encoders", "transformer"]  # another dtype: encoded again


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_loading_prints_nothing_from_third_parties(folders, family, capfd):
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(folders[family], device="cpu", dtype="bfloat16")
        load_model(folders[family], device="cpu", dtype="float32")
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    assert [str(w.message) for w in caught] == []


def test_dtype_keyword_follows_diffusers():
    from diffusers.utils import deprecation_utils

    kw = lm_model._dtype_kwargs(torch.bfloat16)
    assert kw == ({"dtype": torch.bfloat16} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": torch.bfloat16})


# ---- the cost plan ------------------------------------------------------------------------------


def _flat_memory_model(per_row_gb: float = 1.0):
    est = {"a": per_row_gb * 1e9, "b": 0.0, "c": 0.0}
    return {"reference": {"width": 1536, "heads": 24, "blocks": 24, "text_tokens": 333},
            "estimators": {k: dict(est) for k in ("forward_row", "k_batch", "jvp_row", "vjp_row", "hutchinson_row")}}


def test_plan_flops_match_the_hand_counts_and_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from diffusers import FluxTransformer2DModel
    from largemodel.models import fullsize
    from largemodel.plan import cost as plan

    medium = plan.known_arch("sd3.5-medium")
    assert medium.parameters == 2_243_171_520 + 384 * 384 * 1536
    assert medium.image_tokens(1024) == 4096
    assert medium.forward_flops(1024) == fullsize.sd3_forward_flops(latent_size=128)
    assert 8.0e9 < plan.known_arch("sd3.5-large").parameters < 8.2e9
    assert 11.8e9 < plan.known_arch("flux.1-dev").parameters < 12.0e9
    cfg = {k: v for k, v in fullsize.load_config(fullsize.CONFIG_DIR / "flux1_dev_transformer.json").items() if not k.startswith("_")}
    cfg.update(num_layers=2, num_single_layers=3)  # the count is per block: two kinds suffice
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(cfg)
    n, t = 256, 64
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(hidden_states=meta(1, n, 64), encoder_hidden_states=meta(1, t, 4096), pooled_projections=meta(1, 768),
              timestep=meta(1), guidance=meta(1), img_ids=torch.zeros(n, 3, device="meta"),
              txt_ids=torch.zeros(t, 3, device="meta"), return_dict=False)
    assert fc.get_total_flops() == plan.flux_forward_flops(cfg, image_tokens=n, text_tokens=t)


@pytest.mark.parametrize("family", ["sd3.5", "flux"])
def test_one_parameter_count_for_plan_and_fullsize(family):
    """``transformer_configs.count_parameters`` (meta device) equals the count of the network built
    for real on the CPU, and is what ``plan.arch_from_config`` and ``fullsize.parameter_count`` use."""
    from largemodel.models import fullsize
    from largemodel.plan import cost as plan
    from largemodel.models import transformer_configs
    from largemodel.models.tiny import tiny_transformer

    real = tiny_transformer(family, latent_channels=4, sample_size=8, seed=0)
    cfg = dict(real.config)
    expected = (sum(p.numel() for p in real.parameters()), sum(b.numel() for b in real.buffers()))
    assert transformer_configs.count_parameters(cfg) == fullsize.parameter_count(cfg) == expected
    assert plan.arch_from_config(cfg, name="tiny").parameters == sum(expected)
    assert plan.arch_from_config(cfg, name="tiny").family == ("flux" if family == "flux" else "sd3")


def test_plan_rows_time_and_the_fit_check():
    from largemodel.plan import cost as plan
    from largemodel.study.ode import nfe_per_map

    arch = plan.known_arch("sd3.5-medium")
    mm = _flat_memory_model(1.0)
    p = plan.make_plan(arch, resolution=1024, steps=500, perturbations=8, jvp_directions=1, lambda_method="jvp",
                       power_iters=2, batch_size=4, device_bytes=80e9, memory_model=mm)
    names = [e.name for e in p.estimators]
    assert names[0] == "inversion" and "lambda by JVP" in names and "power iteration (VJP)" in names
    reg = p.estimators[1]
    assert reg.rows == 9 * 500 and reg.rows_at_once == 4
    weights = arch.parameters * 2
    assert reg.peak_bytes == pytest.approx(weights + plan.RUNTIME_RESERVE + 4e9)
    assert reg.seconds == pytest.approx(9 * 500 * arch.forward_flops(1024) / (790e12 * plan.EFFICIENCY["forward_row"]))
    fd = plan.make_plan(arch, resolution=1024, steps=500, solver="heun-diffusers", jvp_directions=3, lambda_method="fd",
                        memory_model=mm)
    assert fd.estimators[1].rows == (1 + 8 + 6) * nfe_per_map("heun-diffusers", 500) == 15 * 999
    plan.check_fits(p)  # 80 GB: fits
    tight = plan.make_plan(arch, resolution=1024, steps=500, lambda_method="jvp", batch_size=16, device_bytes=16e9,
                           memory_model=mm)
    with pytest.raises(plan.PlanError, match=r"^regenerations \(K-batch\) needs 16\.1 GB with 9 rows per call on a 16 GB "
                                             r"device; --batch-size 8 fits$"):
        plan.check_fits(tight)


def test_plan_cli_prints_and_exits(capsys, tmp_path):
    from reports.cli import main

    rc = main(["largemodel", "study", "--model", "sd3.5-large", "--images", str(tmp_path), "--out", str(tmp_path / "o"),
               "--resolution", "1024", "--plan", "80", "--power-iters", "1", "--lambda-method", "jvp"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "sd3.5-large" in out and "4,096 image + 333 text tokens" in out and "80 GB" in out
    for name in ("inversion", "regenerations (K-batch)", "lambda by JVP", "power iteration (VJP)"):
        assert name in out
    assert not (tmp_path / "o").exists()  # nothing run, nothing written


def test_shipped_memory_model_passes_its_check():
    """The memory model measured on the CPU (full-size SD3.5 Medium, random weights): its
    prediction at the held-out resolution is within 15% of the measured peak, per estimator."""
    from largemodel.plan import cost as plan

    mm = plan.load_memory_model()
    assert {"forward_row", "k_batch", "jvp_row", "vjp_row"} <= set(mm["estimators"])
    for name, e in mm["estimators"].items():
        assert e["checks"], name
        for chk in e["checks"]:
            assert abs(chk["relative_error"]) <= 0.15, (name, chk)
            assert chk["tokens"] > max(e["fit_tokens"])  # held-out, larger resolutions
    arch = plan.known_arch("sd3.5-medium")
    vjp = plan.activation_bytes(mm, "vjp_row", arch, 4096 + 333)
    fwd = plan.activation_bytes(mm, "forward_row", arch, 4096 + 333)
    assert vjp > fwd > 0


def test_study_cli_stderr_holds_nothing_from_third_parties(folders, tmp_path):
    """Issue 17: the whole ``pfode largemodel study`` run on a saved tiny folder, in a fresh
    process (diffusers' loggers and warnings as a user meets them): stderr holds pfode's own line only."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(imgs / f"{i}.png")
    code = "import sys; from reports.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["largemodel", "study", "--model", str(folders["flux"]), "--images", str(imgs), "--out", str(tmp_path / "o"),
            "--n-images", "2", "--steps", "3", "--perturbations", "2", "--dtype", "bf16", "--solver", "heun-diffusers",
            "--lambda-method", "fd"]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    # pfode's own line about heun-diffusers on FLUX (issue 27), nothing else
    assert res.stderr.splitlines() == [f"pfode: warning: {ode.solver_note('heun-diffusers', 'flux')}"]
    assert "2 images; median latent MSE" in res.stdout


def test_study_over_the_device_memory_stops_before_loading(folders, tmp_path, monkeypatch, capsys):
    """On a device too small for the plan the study stops with one line naming the estimator and
    a flag, before any weight is loaded (here a fake 0.2 GB device limit on the CPU run)."""
    from largemodel.models import load as lm
    from largemodel.plan import cost as plan
    from reports.cli import main

    tiny = plan.arch_from_config(lm.inspect_folder(folders["sd3"]).transformer_config, name="tiny")
    # room for 2 rows of 1 MB (bf16-measured) activations, 2 MB in fp32; not for 11
    budget = tiny.parameters * 4 + plan.RUNTIME_RESERVE + 5.5e6
    monkeypatch.setattr(plan, "device_memory", lambda device: float(budget))
    monkeypatch.setattr(plan, "activation_bytes", lambda mm, est, arch, tokens, terms="all": 0.0 if terms == "quadratic" else 1e6)
    monkeypatch.setattr(lm, "load_model", lambda *a, **k: pytest.fail("loaded weights"))
    rc = main(["largemodel", "study", "--model", str(folders["sd3"]), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
               "--dtype", "fp32", "--steps", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("pfode: error: regenerations (K-batch + fd lambda) needs ")
    assert err[0].endswith("with 11 rows per call on a 2 GB device; --batch-size 2 fits")
