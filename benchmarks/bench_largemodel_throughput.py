"""Benchmark (not a test): the reconstruction study's throughput on the full-size SD3.5 Medium
transformer against a naive one-trajectory-at-a-time loop, and the model FLOP utilisation.

The model is ``SD3Transformer2DModel`` built from ``largemodel/models/configs/sd35_medium_transformer.json``
with random weights (``largemodel.models.fullsize``: no download; 2.24 B parameters), in bf16 by
default, conditioned on a random null prompt of the real shape (333 x 4096, pooled 2048). No VAE:
an image of ``--resolution`` R px is its ``16 x R/8 x R/8`` latent (the study's cost is the ODE;
the VAE runs once per image). Two methods do the same work on the same model in one run:

* **study**: ``largemodel.study.runner._study_group`` itself (the code ``pfode largemodel study`` runs),
  with ``images_per_batch = --images`` (B) and ``batch_size = --batch-size``: the B images are
  inverted together (rows of B), then the B reconstructions and B*K perturbed regenerations
  (``--perturbations`` K) are regenerated together, ``--batch-size`` rows per transformer call.
  JVP / power iteration / log-Lambda are off: the comparison is the ODE maps.
* **naive**: every trajectory alone with batch 1, as a per-image script would: B inversions, B
  reconstructions and B*K perturbed regenerations, the same perturbation directions.

Both integrate ``--steps`` Euler (``--solver``) steps per map on the model's sigma grid, so both
make ``B (K + 2) steps`` row-evaluations of the transformer (counted: ``rows``; the run fails if
they differ). Reported per method: seconds, images/s (B images), transformer calls, and MFU =
(FLOPs per row) x rows / seconds / peak, with FLOPs per row counted by
``torch.utils.flop_counter.FlopCounterMode`` on one forward at the study's batch size (and
checked against batch 1 and against ``largemodel.models.fullsize.sd3_forward_flops``, a hand count equal
to it wherever every op is seen; where the counter misses more than 1%, e.g. the CPU's fused
attention kernel has no FLOP formula, the hand count is used and ``flops_source`` says so) and
the peak the GPU's measured dense bf16 GEMM ceiling: measured on the spot (best of a few
8192^3 bf16 matmuls, ``measure_gemm_tflops``; ``MEASURED_BF16_GEMM_TFLOPS`` records what an H200
reaches, ~790 TFLOP/s, not the data sheet's 989), ``--peak-tflops`` overrides, and the data-sheet
table below is reported beside it for reference. Goals (issue): study / naive >= 3x, study MFU >= 40%.

Timing: CUDA events around each method (plus wall clock), after a warm-up that runs one transformer
call at every batch size either method uses (this also triggers compilation with ``--compile``);
``--repeat`` runs of each method, the median reported. ``--resolution`` takes several values
(measured in turn on the same model).

GPU: ``python benchmarks/bench_largemodel_throughput.py --json out.json`` (defaults: 1024 px,
B = 4, K = 8, batch 12, 20 steps, bf16). CPU smoke mode, a tiny random SD3.5-architecture model
running the same code: ``python benchmarks/bench_largemodel_throughput.py --tiny``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from largemodel.models import fullsize
from largemodel.study import instability as ins
from largemodel.models.load import FlowModel  # noqa: E402
from largemodel.study.ode import generate, invert  # noqa: E402
from largemodel.study.runner import StudyConfig, _study_group  # noqa: E402

#: dense (no sparsity) bf16 tensor-core peak, TFLOP/s, by a substring of the device name; the
#: first match in this order wins (vendor data sheets; SXM parts unless the name says otherwise)
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("A10", 125.0),
)

#: measured dense bf16 GEMM ceilings (TFLOP/s): what a large bf16 matmul actually reaches
#: (issue 14, H200: ~790 against the data sheet's 989)
MEASURED_BF16_GEMM_TFLOPS: tuple[tuple[str, float], ...] = (("H200", 790.0),)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def measure_gemm_tflops(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    """The device's dense bf16 GEMM ceiling: the best TFLOP/s of ``repeats`` ``size^3`` matmuls."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize(device)
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * size**3 / best / 1e12


def peak_tflops(device: torch.device, override: float | None, measure: bool = True) -> tuple[float | None, str]:
    """The peak used for MFU and where it came from: ``--peak-tflops``, else the measured GEMM
    ceiling of this device (``measure``), else the measured table, else the data sheet."""
    if override is not None:
        return float(override), "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for a CPU (give --peak-tflops)"
    if measure:
        return measure_gemm_tflops(device), "measured: best bf16 8192^3 GEMM on this device"
    name = torch.cuda.get_device_name(device)
    for key, value in MEASURED_BF16_GEMM_TFLOPS:
        if key.lower() in name.lower():
            return value, f"measured table: {key} bf16 GEMM ceiling"
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value, f"table: {key} dense bf16"
    return None, f"{name!r} not in the table (give --peak-tflops)"


# ---- timing and counting -------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """``(device seconds, wall seconds, result)``; device seconds from CUDA events on a GPU."""
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        return start.elapsed_time(end) / 1000.0, wall, out
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return wall, wall, out


class CallCounter:
    """Stands in for ``model.velocity`` (an instance attribute shadows the method) and counts
    transformer calls, rows and the batch sizes used."""

    def __init__(self, model: FlowModel) -> None:
        self._fn = FlowModel.velocity.__get__(model)
        self.calls = 0
        self.rows = 0
        self.batch_sizes: dict[int, int] = {}

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        self.calls += 1
        self.rows += int(x.shape[0])
        self.batch_sizes[int(x.shape[0])] = self.batch_sizes.get(int(x.shape[0]), 0) + 1
        return self._fn(x, sigma)


@contextlib.contextmanager
def counting(model: FlowModel) -> Iterator[CallCounter]:
    counter = CallCounter(model)
    model.velocity = counter  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        del model.velocity


@torch.no_grad()
def flops_per_call(model: FlowModel, batch: int, latent: tuple[int, int, int]) -> int:
    """FLOPs of one transformer forward at ``batch`` rows (``FlopCounterMode``; runs it once)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, *latent, device=model.device, dtype=model.state_dtype)
    with FlopCounterMode(display=False) as fc:
        model.velocity(x, 0.5)
    _sync(model.device)
    return int(fc.get_total_flops())


# ---- the two methods -------------------------------------------------------------------------


def study_method(model: FlowModel, cfg: StudyConfig, images: torch.Tensor, sigmas: torch.Tensor, seed: int) -> dict[str, Any]:
    """The study's own group function (inversion of B images, batched regenerations)."""
    gen = torch.Generator().manual_seed(seed)
    records, _, _ = _study_group(model, cfg, images, sigmas, gen)
    return {"mu_bar": [r["mu_bar"] for r in records], "mse_latent": [r["mse_latent"] for r in records]}


@torch.no_grad()
def naive_method(model: FlowModel, cfg: StudyConfig, images: torch.Tensor, sigmas: torch.Tensor, seed: int) -> dict[str, Any]:
    """Every trajectory alone (batch 1): each inversion, each reconstruction, each perturbed
    regeneration; the perturbation directions are the study's (same generator, same draw)."""
    vel = model.velocity
    x = model.encode(images)
    b, k, n = x.shape[0], cfg.perturbations, x[0].numel()
    z = torch.cat([invert(vel, x[i : i + 1], sigmas, solver=cfg.solver) for i in range(b)])
    gen = torch.Generator().manual_seed(seed)
    d = ins.unit_directions((b * k, *z.shape[1:]), gen, z)
    size = cfg.eps_rms * math.sqrt(n)
    xr = torch.cat([generate(vel, z[i : i + 1], sigmas, solver=cfg.solver) for i in range(b)])
    gp = torch.cat(
        [generate(vel, z[j // k : j // k + 1] + size * d[j : j + 1], sigmas, solver=cfg.solver) for j in range(b * k)]
    )
    mu = (gp - xr.repeat_interleave(k, dim=0)).flatten(1).to(torch.float64).norm(dim=1).div(size).view(b, k)
    mse = ((xr - x).flatten(1).to(torch.float64) ** 2).mean(1)
    return {"mu_bar": mu.mean(1).tolist(), "mse_latent": mse.tolist()}


# ---- model -----------------------------------------------------------------------------------


def build_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[FlowModel, dict[str, Any]]:
    if args.tiny:
        from largemodel.models.tiny import POOLED_DIM, TEXT_DIM, TEXT_LEN, tiny_scheduler, tiny_transformer

        with fullsize._quiet_diffusers():
            tf = tiny_transformer("sd3.5", latent_channels=16, sample_size=8, seed=args.seed).to(device, dtype)
        tf.eval().requires_grad_(False)
        gen = torch.Generator().manual_seed(args.seed + 1)
        embeds = 0.5 * torch.randn(1, TEXT_LEN, TEXT_DIM, generator=gen)
        pooled = 0.5 * torch.randn(1, POOLED_DIM, generator=gen)
        model = fullsize.flow_model_from_transformer(
            tf, dict(tiny_scheduler("sd3.5").config), embeds, pooled, latent_size=8, source="tiny random SD3.5"
        )
        desc = {"model": "tiny random SD3.5 (2 blocks, width 16)", "text_tokens": TEXT_LEN}
    else:
        t0 = time.perf_counter()
        model = fullsize.build_flow_model(device=device, dtype=dtype, seed=args.seed, text_tokens=args.text_tokens)
        _sync(device)
        desc = {
            "model": "SD3.5 Medium transformer, random weights",
            "config": str(fullsize.SD35_MEDIUM_TRANSFORMER.relative_to(Path(__file__).resolve().parents[1])),
            "text_tokens": args.text_tokens,
            "build_seconds": time.perf_counter() - t0,
        }
    desc["parameters"] = sum(p.numel() for p in model.transformer.parameters())
    if args.compile:
        model.transformer = torch.compile(model.transformer, mode=args.compile_mode, dynamic=False)
    return model, desc


@contextlib.contextmanager
def sdpa_backend(name: str) -> Iterator[None]:
    if name == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    with sdpa_kernel(table[name]):
        yield


# ---- one resolution ----------------------------------------------------------------------------


def run_resolution(model: FlowModel, args: argparse.Namespace, resolution: int, peak: float | None) -> dict[str, Any]:
    device = model.device
    factor = 1 if args.tiny else fullsize.SD3_VAE_FACTOR
    if resolution % factor:
        raise SystemExit(f"--resolution {resolution} is not a multiple of the VAE factor {factor}")
    latent = model.latent_shape(resolution // factor)
    b, k = args.images, args.perturbations
    cfg = StudyConfig(
        steps=args.steps, solver=args.solver, perturbations=k, eps_rms=args.eps_rms, jvp_directions=0, power_iters=0,
        log_lambda="none", batch_size=args.batch_size, images_per_batch=b, seed=args.seed,
    )
    sigmas = model.sigmas(args.steps, latent)
    images = torch.randn(b, *latent, generator=torch.Generator().manual_seed(args.seed + 7))
    rows = b * (k + 1)
    sizes = sorted({b, 1, min(args.batch_size, rows)} | ({rows % args.batch_size} - {0}))
    where = f"latent side {resolution}" if args.tiny else f"{resolution} px"
    log(f"[{where}, latent {latent}] warm-up at batch sizes {sizes}")
    warm: dict[int, float] = {}
    for s in sizes:
        xw = torch.randn(s, *latent, device=device, dtype=model.state_dtype)
        for _ in range(args.warmup):
            warm[s], _, _ = timed(lambda: model.velocity(xw, 0.5), device)
    fl_batch = min(args.batch_size, rows)
    flops_b = flops_per_call(model, fl_batch, latent)
    flops_1 = flops_per_call(model, 1, latent)
    per_row = counted = flops_b / fl_batch
    hand = None if args.tiny else fullsize.sd3_forward_flops(latent_size=latent[1], text_tokens=args.text_tokens)
    source = "FlopCounterMode"
    if hand and abs(counted / hand - 1) > 0.01:
        # e.g. an attention kernel without a FLOP formula (the CPU's fused SDPA): the hand count
        # equals FlopCounterMode exactly where every op is seen (tests/largemodel/test_lm_gpu.py)
        per_row, source = float(hand), f"hand count (FlopCounterMode saw {counted / hand:.1%} of it)"
        log(f"  FlopCounterMode counted {counted / hand:.1%} of the hand count: MFU uses the hand count")
    out: dict[str, Any] = {
        "resolution_px": resolution if not args.tiny else None,
        "latent": list(latent),
        "image_tokens": (latent[1] // 2) * (latent[2] // 2),
        "flops_per_row": per_row,
        "flops_source": source,
        "flops_per_row_counted": counted,
        "flops_per_row_counted_batch1": flops_1,
        "flops_per_row_hand_count": hand,
        "flops_counter_over_hand_count": (counted / hand) if hand else None,
        "warmup_call_seconds_by_batch": warm,
        "methods": {},
    }
    results = {}
    for name, fn in (("study", study_method), ("naive", naive_method)):
        runs = []
        for r in range(args.repeat):
            log(f"  {name} run {r + 1}/{args.repeat} ...")
            with counting(model) as counter, sdpa_backend(args.sdpa):
                secs, wall, res = timed(lambda: fn(model, cfg, images, sigmas, args.seed), device)
            runs.append((secs, wall, counter))
            log(f"    {secs:.3f} s ({counter.calls} calls, {counter.rows} rows)")
        results[name] = res
        secs = statistics.median(r[0] for r in runs)
        counter = runs[0][2]
        flops = per_row * counter.rows
        out["methods"][name] = {
            "seconds": secs,
            "seconds_runs": [r[0] for r in runs],
            "wall_seconds_runs": [r[1] for r in runs],
            "images_per_s": b / secs,
            "trajectories_per_s": b * (k + 2) / secs,
            "transformer_calls": counter.calls,
            "rows": counter.rows,
            "batch_sizes": dict(sorted(counter.batch_sizes.items())),
            "achieved_tflops": flops / secs / 1e12,
            "mfu": (flops / secs / (peak * 1e12)) if peak else None,
        }
    st, nv = out["methods"]["study"], out["methods"]["naive"]
    if st["rows"] != nv["rows"] or st["rows"] != b * (k + 2) * args.steps * (2 if args.solver == "heun" else 1):
        raise RuntimeError(f"unequal work: study {st['rows']} rows, naive {nv['rows']} rows")
    out["speedup_study_over_naive"] = nv["seconds"] / st["seconds"]
    mu_s, mu_n = torch.tensor(results["study"]["mu_bar"]), torch.tensor(results["naive"]["mu_bar"])
    out["mu_bar_study"], out["mu_bar_naive"] = mu_s.tolist(), mu_n.tolist()
    out["mu_bar_max_rel_diff"] = float(((mu_s - mu_n).abs() / mu_n.abs()).max())
    out["goals"] = {
        "speedup_ge_3x": out["speedup_study_over_naive"] >= 3.0,
        "study_mfu_ge_40pct": (st["mfu"] >= 0.40) if st["mfu"] is not None else None,
    }
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke mode: tiny random SD3.5 model, same code")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda; cpu with --tiny)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="network dtype (default bf16; fp32 with --tiny on a CPU)")
    p.add_argument("--resolution", type=int, nargs="+", default=None,
                   help="image side(s) in px, latent = R/8 (default 1024; --tiny: 8, the latent side itself)")
    p.add_argument("--steps", type=int, default=20, help="ODE steps per map (default %(default)s; the paper uses 500)")
    p.add_argument("--solver", choices=("euler", "heun"), default="euler")
    p.add_argument("--images", type=int, default=4, help="B: images per study group (default %(default)s)")
    p.add_argument("--perturbations", type=int, default=8, help="K perturbed regenerations per image (default %(default)s)")
    p.add_argument("--eps-rms", type=float, default=1e-2, help="RMS perturbation size per coordinate, ||D|| = eps_rms sqrt(n) (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=12, help="rows per transformer call in the study (default %(default)s)")
    p.add_argument("--text-tokens", type=int, default=fullsize.SD3_TEXT_TOKENS, help="null-prompt tokens (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls per batch size (default %(default)s)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per method, median reported (default %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer (dynamic=False)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, max-autotune)")
    p.add_argument("--sdpa", choices=("default", "flash", "efficient", "cudnn", "math"), default="default",
                   help="force a scaled-dot-product-attention backend (default: PyTorch's choice)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense TFLOP/s for MFU (default: this GPU's measured bf16 GEMM ceiling)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON summary to this file")
    args = p.parse_args(argv)
    for name in ("steps", "images", "batch_size", "warmup", "repeat"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.perturbations < 1:
        p.error("--perturbations must be >= 1 (the study batches the K perturbed regenerations)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the full-size benchmark needs a GPU (use --tiny for the CPU smoke mode)")
    dtype = DTYPES[args.dtype or ("fp32" if args.tiny and device.type == "cpu" else "bf16")]
    resolutions = args.resolution or ([8] if args.tiny else [1024])
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    log(f"building the model on {device} ({dtype}) ...")
    model, desc = build_model(args, device, dtype)
    import diffusers

    summary: dict[str, Any] = {
        "benchmark": "largemodel study vs naive per-trajectory loop",
        **desc,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "dtype": str(dtype).replace("torch.", ""),
        "peak_tflops": peak,
        "peak_source": peak_source,
        "compile": args.compile and args.compile_mode,
        "sdpa": args.sdpa,
        "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled() if device.type == "cuda" else None,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "params": {
            "steps": args.steps, "solver": args.solver, "images": args.images, "perturbations": args.perturbations,
            "batch_size": args.batch_size, "eps_rms": args.eps_rms, "repeat": args.repeat, "warmup": args.warmup,
            "seed": args.seed,
        },
        "vae": "excluded: the ODE dominates the cost (steps x rows transformer calls vs one encode/decode per image)",
        "results": [],
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for res in resolutions:
        summary["results"].append(run_resolution(model, args, res, peak))
    if device.type == "cuda":
        summary["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return summary


if __name__ == "__main__":
    main()
