"""Prompts and classifier-free guidance (issue 27, items 1-2; docs/theory.md §10.7).

On tiny SD3 and FLUX folders with tiny text encoders (random weights, tokenizers built here):
the regeneration with a prompt and guidance scale ``W`` equals the family's diffusers pipeline
(latents given, ``output_type="latent"``) element by element in fp32 and bf16; ``W = 1`` is one
pass on the conditional rows, SD3 batches [unconditional; conditional], FLUX runs two passes;
prompts are encoded before the transformer loads, once, and cached on the prompt and the encoders'
files; the estimators differentiate the guided field.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from largemodel.models import prompts as prompts_mod
from largemodel.models.conditioning import Conditioning, check_guidance_scale
from largemodel.models.folder import ModelFolderError
from largemodel.models.load import _load_kwargs, load_model
from largemodel.models.tiny import build_tiny_folder
from largemodel.study import instability as ins
from largemodel.study import ode

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPT = "a photo of a cat, on a mat"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    return {fam: build_tiny_folder(root / fam, fam, text_encoders=True) for fam in ("sd3", "flux")}


def _pipeline(folder, family, m, dtype):
    """The family's diffusers pipeline on the model's own transformer and VAE, its text encoders
    loaded from the folder by diffusers as ``load_model`` loads them."""
    import diffusers

    cls = diffusers.FluxPipeline if family == "flux" else diffusers.StableDiffusion3Pipeline
    pipe = cls.from_pretrained(folder, transformer=m.transformer, vae=m.vae, **_load_kwargs(dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_latents(pipe, family, m, z, steps, w):
    with torch.no_grad():
        kw = dict(num_inference_steps=steps, height=m.resolution, width=m.resolution, output_type="latent")
        if family == "flux":  # true CFG with the empty negative prompt; --guidance stays the embedding
            c, h, wd = z.shape[1:]
            lat = type(pipe)._pack_latents(z, z.shape[0], c, h, wd)
            out = pipe(prompt=PROMPT, negative_prompt="", true_cfg_scale=w, guidance_scale=m.guidance, latents=lat, **kw)
            return type(pipe)._unpack_latents(out.images, m.resolution, m.resolution, 2)
        return pipe(prompt=PROMPT, guidance_scale=w, latents=z, **kw).images


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prompted_guided_regeneration_equals_the_pipeline(folders, family, dtype):
    """G with a prompt and W in {1, 3.5, 7} equals pipe(prompt, W, latents=z), every element (max abs
    difference 0); the state is kept in the network's dtype here, as the pipelines keep it."""
    steps = 5
    results = {}
    for w in (1.0, 3.5, 7.0):
        m = load_model(folders[family], device="cpu", dtype=dtype, prompt=PROMPT, guidance_scale=w)
        z = torch.randn(1, *m.latent_shape(), generator=torch.Generator().manual_seed(0)).to(dtype)
        with torch.no_grad():
            ours = ode.generate(m.velocity, z, m.sigmas(steps))
        theirs = _pipeline_latents(_pipeline(folders[family], family, m, dtype), family, m, z, steps, w)
        assert ours.dtype == theirs.dtype == dtype
        assert torch.equal(ours, theirs), float((ours.float() - theirs.float()).abs().max())
        results[w] = ours
    assert not torch.equal(results[1.0], results[3.5]) and not torch.equal(results[3.5], results[7.0])


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_guidance_passes_as_the_pipelines_run_them(folders, family):
    """W = 1: one call on B rows; W > 1: SD3 one call on 2B rows, FLUX two calls on B rows; and the
    guided field is u_u + W (u_c - u_u) of the unguided fields on the prompt and on the null prompt."""
    m = load_model(folders[family], device="cpu", dtype="float64", prompt=PROMPT)
    x = torch.randn(3, *m.latent_shape(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rows = []
    orig = m.transformer.forward

    def spy(*args, **kwargs):
        rows.append(kwargs["hidden_states"].shape[0])
        return orig(*args, **kwargs)

    m.transformer.forward = spy
    try:
        with torch.no_grad():
            u_c = m.velocity(x, 0.4)
            u_u = m.conditioned("").velocity(x, 0.4)
            assert rows == [3, 3]
            rows.clear()
            u_w = m.conditioned(guidance_scale=3.5).velocity(x, 0.4)
    finally:
        m.transformer.forward = orig
    assert rows == ([3, 3] if family == "flux" else [6])
    torch.testing.assert_close(u_w, u_u + 3.5 * (u_c - u_u), rtol=1e-12, atol=1e-12)
    assert float((u_c - u_u).abs().max()) > 1e-3  # the prompt changes the field


def test_estimators_differentiate_the_guided_field(folders):
    """lambda_G by JVP through the guided SD3 field agrees with central differences (fp64)."""
    m = load_model(folders["sd3"], device="cpu", dtype="float64", state_dtype=torch.float64, prompt=PROMPT,
                   guidance_scale=3.5)
    sig = m.sigmas(3)
    z = torch.randn(1, *m.latent_shape(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    d = ins.unit_directions((1, *z.shape[1:]), torch.Generator().manual_seed(3), z).view(1, 1, *z.shape[1:])
    jvp = ins.jvp_lambda(m.velocity, z, sig, d)
    fd = ins.fd_lambda(m.velocity, z, sig, d, eps_rms=1e-5)
    torch.testing.assert_close(jvp, fd, rtol=1e-6, atol=0)
    unguided = ins.jvp_lambda(m.conditioned(guidance_scale=1.0).velocity, z, sig, d)
    assert abs(float(jvp) - float(unguided)) > 1e-6 * float(unguided)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_power_iteration_operator_on_the_guided_field(folders, family):
    """The JVP (math kernel) and VJP (checkpointed reverse mode) halves of power iteration through the
    guided field (SD3's batched rows, FLUX's two passes) are adjoint, <J v, w> = <v, J^T w>, and
    guidance changes J_G. fp64; FLUX's transformer keeps some float32 arithmetic inside (measured
    relative gap 3e-11 at W = 1, 3e-9 at W = 7; SD3 2e-15), hence its looser bound."""
    tol = {"sd3": 1e-12, "flux": 1e-7}[family]
    m = load_model(folders[family], device="cpu", dtype="float64", state_dtype=torch.float64, prompt=PROMPT,
                   guidance_scale=7.0)
    sig = m.sigmas(2)
    g = torch.Generator().manual_seed(5)
    z, v, w = (torch.randn(1, *m.latent_shape(), generator=g, dtype=torch.float64) for _ in range(3))
    op = ins.RegenerationLinearization(m.velocity, z, sig, "euler")
    jv, jtw = op.jvp(v), op.vjp(w)
    lhs, rhs = float((jv * w).sum()), float((v * jtw).sum())
    assert abs(lhs - rhs) < tol * max(1.0, abs(lhs))
    plain = ins.RegenerationLinearization(m.conditioned(guidance_scale=1.0).velocity, z, sig, "euler").jvp(v)
    assert float((plain - jv).abs().max()) > 1e-6


def test_prompts_encoded_first_once_and_cached(folders, tmp_path, monkeypatch):
    """Encoders before the transformer; each distinct prompt encoded once; the cache is keyed on the
    prompt (a new prompt encodes only itself), the dtype and the encoders' files."""
    import diffusers

    from simulate.store import claim_folder

    out = claim_folder(tmp_path / "out", "study")
    order, encoded = [], []
    real_enc, real_tf = prompts_mod._from_encoders, diffusers.SD3Transformer2DModel.from_pretrained

    def enc(info, prompts, device, dtype):
        order.append("encoders")
        encoded.append(list(prompts))
        return real_enc(info, prompts, device, dtype)

    def tf(*args, **kwargs):
        order.append("transformer")
        return real_tf(*args, **kwargs)

    monkeypatch.setattr(prompts_mod, "_from_encoders", enc)
    monkeypatch.setattr(diffusers.SD3Transformer2DModel, "from_pretrained", tf)
    kw = dict(device="cpu", dtype="float32", prompt_cache=out)
    m1 = load_model(folders["sd3"], prompt=PROMPT, prompts=["b", PROMPT, "b"], **kw)
    assert order == ["encoders", "transformer"] and encoded == [["", PROMPT, "b"]]
    assert sorted(m1.prompts) == ["", PROMPT, "b"] and len(list((out / "prompt_cache").iterdir())) == 3
    order.clear()
    m2 = load_model(folders["sd3"], prompt=PROMPT, **kw)
    assert order == ["transformer"]  # every prompt from the cache
    assert torch.equal(m2.prompt_embeds, m1.prompt_embeds)
    load_model(folders["sd3"], prompt="another", **kw)
    assert encoded[-1] == ["another"]
    load_model(folders["sd3"], prompt=PROMPT, **{**kw, "dtype": "bfloat16"})
    assert encoded[-1] == ["", PROMPT]  # another dtype: encoded again
    import shutil

    from largemodel.models.folder import inspect_folder

    info = inspect_folder(shutil.copytree(folders["sd3"], tmp_path / "copy"))
    before = prompts_mod.encoder_digest(info)
    tok = info.path / "tokenizer_3" / "tokenizer_config.json"
    tok.write_text(tok.read_text() + " ")
    prompts_mod._FILE_DIGESTS.clear()
    assert prompts_mod.encoder_digest(info) != before  # an edited encoder file: a new cache key


def test_bad_conditioning_is_refused(folders, tmp_path):
    for bad in (0.5, 0.0, float("nan"), float("inf"), True, "3"):
        with pytest.raises(ValueError, match="--guidance-scale must be a finite number >= 1"):
            check_guidance_scale(bad)
    e, p = torch.zeros(1, 4, 16), torch.zeros(1, 8)
    with pytest.raises(ValueError, match="needs the unconditional"):
        Conditioning("x", e, p, guidance_scale=2.0)
    with pytest.raises(ValueError, match="do not match"):
        Conditioning("x", e, p, torch.zeros(1, 4, 8), p, guidance_scale=2.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        Conditioning("x", e * float("nan"), p)
    m = load_model(folders["flux"], device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="was not encoded"):
        m.conditioned("never encoded")
    plain = build_tiny_folder(tmp_path / "plain", "sd3")  # null_prompt.safetensors, no encoders
    with pytest.raises(ModelFolderError, match="null prompt only"):
        load_model(plain, device="cpu", dtype="float32", prompt="a cat")
    assert load_model(plain, device="cpu", dtype="float32", guidance_scale=2.0).guidance_scale == 2.0
    with pytest.raises(TypeError, match="from_pipeline"):
        load_model(dataclasses.make_dataclass("Pipe", [])(), device="cpu")


def test_encoding_prompts_prints_nothing_from_third_parties(folders, capfd):
    capfd.readouterr()
    load_model(folders["flux"], device="cpu", dtype="bfloat16", prompt="quiet please")
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


# ---- a loaded pipeline ---------------------------------------------------------------------------


class _CountingProcessor:
    """A user's attention processor: diffusers' own, counting its calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_from_pipeline_equals_load_model(folders, family):
    """from_pipeline(pipe) and load_model(folder) regenerate identically (prompt, W = 3.5, fp32), with
    the user's attention processors kept; load_model given the pipeline points to from_pipeline."""
    import diffusers

    import largemodel

    cls = diffusers.FluxPipeline if family == "flux" else diffusers.StableDiffusion3Pipeline
    pipe = cls.from_pretrained(folders[family], **_load_kwargs(torch.float32))
    procs = {k: _CountingProcessor(v) for k, v in pipe.transformer.attn_processors.items()}
    pipe.transformer.set_attn_processor(procs)
    ref = load_model(folders[family], device="cpu", dtype="float32", prompt=PROMPT, guidance_scale=3.5)
    # the folder's 16 px comes from its pfode_model.json; a pipeline object gives the pipelines' default
    ours = largemodel.from_pipeline(pipe, prompt=PROMPT, guidance_scale=3.5,
                                    resolution=16 if family == "flux" else None)
    assert ours.transformer is pipe.transformer and ours.family == ref.family and ours.resolution == ref.resolution
    z = torch.randn(2, *ref.latent_shape(), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = ode.generate(ours.velocity, z, ours.sigmas(4))
        b = ode.generate(ref.velocity, z, ref.sigmas(4))
    assert torch.equal(a, b)
    assert all(p.calls > 0 for p in procs.values())  # the user's processors ran
    assert torch.equal(ours.conditioned("").prompt_embeds, ref.conditioned("").prompt_embeds)
    with pytest.raises(TypeError, match=r"load_model takes a model folder.*largemodel\.from_pipeline"):
        load_model(pipe)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 1"):
        largemodel.from_pipeline(pipe, guidance_scale=0.5)
