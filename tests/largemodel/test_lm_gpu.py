"""largemodel/ on the full-size SD3.5 Medium config and on a GPU.

Tests marked ``gpu`` run for real on a CUDA device and are skipped where there is none (see
``conftest.py``). The others run anywhere: the repo's SD3.5 Medium config builds on the meta
device with the real parameter count, FLOPs counted by ``FlopCounterMode`` match a hand count,
``build_config_folder`` writes a folder ``load_model`` reads, and the throughput benchmark's
``--tiny`` mode runs on the CPU with both methods doing the same work.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from largemodel.models import fullsize
from largemodel.models.load import load_model
from largemodel.study.runner import StudyConfig, _study_group
from largemodel.models.tiny import build_tiny_folder

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_largemodel_throughput.py"

#: parameters of SD3.5 Medium's transformer (+ the 384 x 384 x 1536 positional-embedding buffer
#: = 2,469,663,936: the "2.5B" of the model card)
SD35_MEDIUM_PARAMS = 2_243_171_520
SD35_MEDIUM_POS_EMBED = 384 * 384 * 1536


def _bench():
    spec = importlib.util.spec_from_file_location("bench_largemodel_throughput", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- anywhere ----------------------------------------------------------------------------------


def test_sd35_medium_config_builds_on_meta_with_the_real_size():
    from diffusers import SD3Transformer2DModel

    cfg = SD3Transformer2DModel.load_config(fullsize.SD35_MEDIUM_TRANSFORMER)
    assert cfg["num_layers"] == 24 and cfg["num_attention_heads"] == 24 and cfg["attention_head_dim"] == 64
    assert list(cfg["dual_attention_layers"]) == list(range(13)) and cfg["qk_norm"] == "rms_norm"
    assert (cfg["joint_attention_dim"], cfg["pooled_projection_dim"], cfg["caption_projection_dim"]) == (4096, 2048, 1536)
    assert (cfg["in_channels"], cfg["out_channels"], cfg["patch_size"], cfg["sample_size"], cfg["pos_embed_max_size"]) == (16, 16, 2, 128, 384)
    with torch.device("meta"):
        model = SD3Transformer2DModel.from_config(cfg)
    assert next(model.parameters()).device.type == "meta"
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    assert params == SD35_MEDIUM_PARAMS
    assert buffers == SD35_MEDIUM_POS_EMBED
    assert 2.4e9 < params + buffers < 2.5e9
    assert fullsize.parameter_count() == (SD35_MEDIUM_PARAMS, SD35_MEDIUM_POS_EMBED)
    sched = json.loads(fullsize.SD35_MEDIUM_SCHEDULER.read_text())
    assert sched["_class_name"] == "FlowMatchEulerDiscreteScheduler" and sched["shift"] == 3.0
    assert not sched.get("use_dynamic_shifting", False)


def test_flop_counter_matches_hand_count_on_meta():
    """The MFU numerator: FlopCounterMode on a shape-only full-size model (1024 px -> 4096 image
    tokens + 333 text tokens) equals the hand count and is linear in the batch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = fullsize.build_transformer(device="meta", dtype=torch.bfloat16)
    embeds, pooled = fullsize.null_prompt(device="meta", dtype=torch.bfloat16)
    assert embeds.shape == (1, 333, 4096) and pooled.shape == (1, 2048)
    counted = {}
    for size, batch in ((128, 1), (128, 2), (32, 3)):
        x = torch.empty(batch, 16, size, size, device="meta", dtype=torch.bfloat16)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            out = model(
                hidden_states=x, timestep=torch.full((batch,), 500.0, device="meta"),
                encoder_hidden_states=embeds.expand(batch, -1, -1), pooled_projections=pooled.expand(batch, -1),
                return_dict=False,
            )[0]
        assert out.shape == x.shape
        counted[size, batch] = fc.get_total_flops()
        assert counted[size, batch] == fullsize.sd3_forward_flops(latent_size=size, batch=batch)
    assert counted[128, 2] == 2 * counted[128, 1]
    assert 1.1e13 < counted[128, 1] < 1.15e13  # ~11.25 TFLOP per 1024 px row


def test_build_config_folder_round_trip(tmp_path):
    """A small config through the same path as the full-size one: a folder load_model reads,
    latents as images (no VAE), random null prompt of the requested length."""
    cfg = fullsize.load_config()
    cfg.update(num_layers=2, num_attention_heads=2, attention_head_dim=8, caption_projection_dim=16,
               joint_attention_dim=32, pooled_projection_dim=8, sample_size=8, pos_embed_max_size=16,
               dual_attention_layers=[0])
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    folder = fullsize.build_config_folder(tmp_path / "m", path, dtype="float32", seed=3, text_tokens=5)
    model = load_model(folder, device="cpu", dtype="float32")
    assert model.family == "sd3.5" and model.vae is None
    assert model.resolution == 8 and model.image_channels == 16 and model.latent_shape() == (16, 8, 8)
    assert model.prompt_embeds.shape == (1, 5, 32) and model.pooled_prompt_embeds.shape == (1, 8)
    assert model.scheduler_config["shift"] == 3.0
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        u = model.velocity(x, 0.5)
    assert u.shape == x.shape and torch.isfinite(u).all()
    # the in-memory builder gives the same network (same seed -> same weights)
    mem = fullsize.build_flow_model(path, device="cpu", dtype="float32", seed=3, text_tokens=5)
    with torch.no_grad():
        torch.testing.assert_close(mem.velocity(x, 0.5), u)


def test_benchmark_tiny_mode_on_cpu(tmp_path, single_thread):
    out = tmp_path / "bench.json"
    summary = _bench().main(["--tiny", "--steps", "3", "--images", "2", "--perturbations", "3", "--batch-size", "4",
                             "--json", str(out)])
    assert json.loads(out.read_text())["results"][0]["speedup_study_over_naive"] == summary["results"][0]["speedup_study_over_naive"]
    res = summary["results"][0]
    st, nv = res["methods"]["study"], res["methods"]["naive"]
    assert st["rows"] == nv["rows"] == 2 * (3 + 2) * 3  # B (K + 2) steps
    assert nv["batch_sizes"] == {1: 2 * 5 * 3}
    assert st["batch_sizes"] == {2: 3, 4: 6}  # inversion of B = 2; 8 regeneration rows in chunks of 4
    assert st["transformer_calls"] < nv["transformer_calls"]
    assert res["flops_per_row"] == res["flops_per_row_counted"] == res["flops_per_row_counted_batch1"] > 0
    assert res["mu_bar_max_rel_diff"] < 1e-4  # same directions, same maps: same coefficients
    assert st["mfu"] is None and summary["peak_tflops"] is None


def test_peak_table_and_override():
    bench = _bench()
    assert bench.peak_tflops(torch.device("cpu"), None)[0] is None
    assert bench.peak_tflops(torch.device("cpu"), 100.0) == (100.0, "--peak-tflops")
    names = {"NVIDIA H200": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 80GB HBM3": 989.0,
             "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA L40S": 362.0, "NVIDIA L4": 121.0}
    for name, peak in names.items():
        match = next(v for k, v in bench.PEAK_BF16_TFLOPS if k.lower() in name.lower())
        assert match == peak, name
    # MFU is against the measured GEMM ceiling (an H200 reaches ~790 TFLOP/s, not 989)
    assert dict(bench.MEASURED_BF16_GEMM_TFLOPS)["H200"] == 790.0


@pytest.mark.gpu
def test_measured_gemm_ceiling_is_below_the_data_sheet():
    bench = _bench()
    dev = torch.device("cuda")
    measured = bench.measure_gemm_tflops(dev, size=4096, repeats=3)
    name = torch.cuda.get_device_name(dev)
    sheet = next((v for k, v in bench.PEAK_BF16_TFLOPS if k.lower() in name.lower()), None)
    assert measured > 0 and (sheet is None or measured < 1.05 * sheet)
    peak, source = bench.peak_tflops(dev, None)
    assert source.startswith("measured") and peak > 0


# ---- on a GPU ------------------------------------------------------------------------------------


@pytest.fixture
def exact_cuda_matmuls():
    """No TF32 anywhere (cuDNN convolutions default to it), so float32 CUDA ~ float32 CPU."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.gpu
def test_tiny_study_on_cuda_matches_cpu(tmp_path, exact_cuda_matmuls):
    folder = build_tiny_folder(tmp_path / "sd35", "sd3.5", with_vae=True)
    cfg = StudyConfig(steps=6, perturbations=3, jvp_directions=1, eps_rms=1e-2, images_per_batch=2, batch_size=3)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    recs = {}
    for dev in ("cpu", "cuda"):
        model = load_model(folder, device=dev, dtype="float32")
        sigmas = model.sigmas(cfg.steps)
        recs[dev], recon, z = _study_group(model, cfg, images, sigmas, torch.Generator().manual_seed(1))
        recs[dev + "_z"] = z
    torch.testing.assert_close(recs["cuda_z"], recs["cpu_z"], rtol=1e-4, atol=1e-5)
    for rc, rg in zip(recs["cpu"], recs["cuda"]):
        for key in ("mse_latent", "mse_pixel", "mu_bar", "lambda_jvp", "z_norm2_over_n"):
            assert math.isclose(rg[key], rc[key], rel_tol=1e-3, abs_tol=1e-7), (key, rg[key], rc[key])


@pytest.mark.gpu
def test_full_size_sd35_medium_bf16_forward_on_cuda():
    """The real-size network on the GPU: builds from the repo config, one 1024 px bf16 forward
    (4096 image + 333 text tokens) is finite with the latent's shape, batching two rows gives
    each row's batch-1 result (to bf16 accuracy)."""
    model = fullsize.build_flow_model(device="cuda", dtype="bf16", seed=0)
    try:
        assert model.family == "sd3.5" and model.dtype == torch.bfloat16 and model.device.type == "cuda"
        assert sum(p.numel() for p in model.transformer.parameters()) == SD35_MEDIUM_PARAMS
        assert model.latent_shape() == (16, 128, 128)
        assert model.prompt_embeds.shape == (1, 333, 4096)
        x = torch.randn(2, 16, 128, 128, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
        with torch.no_grad():
            u2 = model.velocity(x, torch.tensor([0.9, 0.3], device="cuda"))
            u1 = torch.cat([model.velocity(x[:1], 0.9), model.velocity(x[1:], 0.3)])
        assert u2.shape == (2, 16, 128, 128) and u2.dtype == torch.float32
        assert torch.isfinite(u2).all() and float(u2.std()) > 0
        rel = float((u2 - u1).norm() / u1.norm())
        assert rel < 5e-2, rel  # bf16 kernels differ with the batch size; a row mix-up is O(1)
        sig = model.sigmas(20)
        assert sig.numel() == 21 and float(sig[0]) == 1.0 and float(sig[-1]) == 0.0
    finally:
        del model
        torch.cuda.empty_cache()


@pytest.mark.gpu
def test_benchmark_tiny_mode_on_cuda(tmp_path):
    summary = _bench().main(["--tiny", "--device", "cuda", "--dtype", "fp32", "--steps", "3", "--images", "2",
                             "--perturbations", "2", "--batch-size", "3", "--json", str(tmp_path / "b.json")])
    res = summary["results"][0]
    assert res["methods"]["study"]["rows"] == res["methods"]["naive"]["rows"] == 2 * 4 * 3
    assert res["mu_bar_max_rel_diff"] < 1e-3
    assert summary["peak_memory_gib"] > 0


@pytest.mark.gpu
def test_benchmark_full_size_runs_on_cuda(tmp_path):
    """A short real run of the benchmark on the full-size model (256 px, 2 steps): every number
    it reports is there and sane; the full 1024 px measurement is the script's default run."""
    summary = _bench().main(["--steps", "2", "--images", "2", "--perturbations", "2", "--batch-size", "6",
                             "--resolution", "256", "--warmup", "1", "--json", str(tmp_path / "b.json")])
    res = summary["results"][0]
    st, nv = res["methods"]["study"], res["methods"]["naive"]
    assert res["latent"] == [16, 32, 32] and res["image_tokens"] == 256
    assert st["rows"] == nv["rows"] == 2 * 4 * 2
    assert abs(res["flops_counter_over_hand_count"] - 1) < 1e-2  # FlopCounterMode sees the fused attention
    assert res["flops_source"] == "FlopCounterMode"
    assert res["speedup_study_over_naive"] > 0
    if summary["peak_tflops"] is not None:
        assert 0 < st["mfu"] < 1 and 0 < nv["mfu"] < 1
    assert all(math.isfinite(m) for m in res["mu_bar_study"] + res["mu_bar_naive"])
