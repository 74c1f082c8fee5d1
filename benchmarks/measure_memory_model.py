"""Measure the memory model of ``largemodel/plan/cost.py`` on the CPU (not a test).

The full-size SD3.5 Medium transformer (``largemodel/models/configs/sd35_medium_transformer.json``,
random weights built directly in bf16, 2.47 B values) runs ONE step of each estimator in a fresh
subprocess per measurement, at several small resolutions:

* ``forward_row``: one Euler step of one row without gradients (the inversion, the
  reconstruction, a ``mu_bar`` row, a finite-difference ``lambda`` row);
* ``k_batch``: the same step on ``--k`` rows at once (the batched perturbed regenerations);
* ``jvp_row``: ``jvp_lambda`` on a one-step grid, one row (forward-mode AD, math attention);
* ``vjp_row``: the reverse pass of power iteration on a one-step grid, one row (checkpointed
  step recomputed and differentiated under the default attention kernels);
* ``hutchinson_row``: one velocity-and-divergence evaluation of ``log_lambda_one_pass``, one
  probe (forward-mode AD, math attention): the same operation as a one-step ``jvp_row`` (a JVP
  of the velocity), so the plan uses the ``jvp_row`` fit for it; measured on request
  (``--estimators ... hutchinson_row``) to confirm.

Peak bytes: one fresh process per resolution builds the model once and runs the estimators in
turn; before each, the resident-set high-water mark (``VmHWM``) is reset through
``/proc/self/clear_refs`` and the peak is ``VmHWM`` after the step minus the resident set at the
reset; ``MALLOC_MMAP_THRESHOLD_`` is fixed at 64 KiB so that freed tensors go back to the
system and the high-water mark sees every transient. The activation peak is fitted per
estimator as ``a + b T + c T^2`` in the joint token count ``T = image tokens + 333`` on the
``--fit`` resolutions (latent sides 8, 16, 32, 48: 16 to 576 image tokens; least squares) and
checked at the held-out ``--check`` resolution (latent 64: 1,024 image tokens, T = 1,357; the
prediction must lie within 15% of the measurement). Results go to
``largemodel/memory_model.json``.

    OMP_NUM_THREADS=1 python benchmarks/measure_memory_model.py             # ~30 min, ~7.5 GB
    python benchmarks/measure_memory_model.py --child jvp_row,vjp_row 16 4  # one process
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ESTIMATORS = ("forward_row", "k_batch", "jvp_row", "vjp_row")  # hutchinson_row: on request (see above)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _build(latent: int):  # noqa: ANN202
    import torch
    from diffusers import SD3Transformer2DModel

    from largemodel.models import fullsize

    gen = torch.Generator().manual_seed(0)
    with fullsize._quiet_diffusers(), torch.device("meta"):
        tf = SD3Transformer2DModel.from_config(fullsize.load_config())
    # storage allocated directly in bf16 (no fp32 copy), filled with U(-0.03, 0.03): the values
    # do not change the memory, only the shapes do
    with fullsize._quiet_diffusers():
        tf = tf.to_empty(device="cpu").to(torch.bfloat16)
    with torch.no_grad():
        for t in [*tf.parameters(), *tf.buffers()]:
            t.uniform_(-0.03, 0.03, generator=gen)
    tf = tf.eval().requires_grad_(False)
    embeds, pooled = fullsize.null_prompt()
    return fullsize.flow_model_from_transformer(
        tf, fullsize.load_config(fullsize.SD35_MEDIUM_SCHEDULER), embeds, pooled, latent_size=latent
    )


def child(estimators: list[str], latent: int, k: int) -> list[dict[str, float]]:
    """Each of ``estimators`` in turn (one step), at latent side ``latent``, in this process."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = _build(latent)
    _measure(model, "forward_row", latent, 1)  # warm-up: first-call allocations (kernel caches) not counted
    return [_measure(model, est, latent, k if est == "k_batch" else 1) for est in estimators]


def _measure(model, estimator: str, latent: int, rows: int) -> dict[str, float]:  # noqa: ANN001
    """One step of ``estimator`` on ``rows`` rows: peak resident bytes above the baseline."""
    import torch

    from largemodel.study import instability as ins
    from largemodel.study.ode import generate

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(rows, 16, latent, latent, generator=gen)
    grid = torch.tensor([1.0, 0.998], dtype=torch.float64)
    vel = model.velocity
    if estimator == "jvp_row":
        dirs = ins.unit_directions((rows, 1, 16, latent, latent), gen, z).view(rows, 1, 16, latent, latent)
    if estimator == "vjp_row":
        w = torch.randn(z.shape, generator=gen)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    t0 = time.perf_counter()
    if estimator in ("forward_row", "k_batch"):
        with torch.no_grad():
            out = generate(vel, z, grid)
    elif estimator == "jvp_row":
        out = ins.jvp_lambda(vel, z, grid, dirs)
    elif estimator == "vjp_row":
        zz = z.clone().requires_grad_(True)
        with torch.enable_grad():
            gz = generate(vel, zz, grid, checkpoint=True)
            (out,) = torch.autograd.grad(gz, zz, grad_outputs=w)
    elif estimator == "hutchinson_row":
        with torch.no_grad():
            out, _ = ins._velocity_and_divergence(vel, z, grid[0], 1, gen, False, 64)
    else:
        raise ValueError(f"unknown estimator {estimator!r}")
    seconds = time.perf_counter() - t0
    assert bool(torch.isfinite(out).all())
    peak = _status("VmHWM") - base
    del out
    gc.collect()
    return {"estimator": estimator, "latent": latent, "rows": rows, "image_tokens": (latent // 2) ** 2,
            "peak_bytes": peak, "baseline_rss": base, "seconds": seconds}


def _run_child(estimators: list[str], latent: int, k: int) -> list[dict[str, float]]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MKL_NUM_THREADS="1",
               MALLOC_MMAP_THRESHOLD_="65536", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, __file__, "--child", ",".join(estimators), str(latent), str(k)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("ESTIMATORS", "LATENT", "K"), help="measure in this process")
    ap.add_argument("--fit", type=int, nargs="+", default=[8, 16, 32, 48], help="latent sides fitted (default %(default)s)")
    ap.add_argument("--check", type=int, nargs="+", default=[64],
                    help="latent sides of the held-out checks (default %(default)s: 1,024 image tokens)")
    ap.add_argument("--k", type=int, default=2, help="rows of the K-batch measurement (default %(default)s)")
    ap.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    ap.add_argument("--out", type=Path, default=ROOT / "largemodel" / "memory_model.json")
    ap.add_argument("--raw", type=Path, default=None, help="also append each measurement to this JSON-lines file")
    ap.add_argument("--from-raw", type=Path, default=None, help="fit measurements already taken (no measuring)")
    args = ap.parse_args()
    if args.child:
        ests, latent, k = args.child
        print(json.dumps(child(ests.split(","), int(latent), int(k))))
        return 0
    measurements = []
    if args.from_raw is not None:
        measurements = [json.loads(line) for line in args.from_raw.read_text().splitlines() if line.strip()]
    else:
        if args.raw is not None and args.raw.is_file():  # resume: resolutions already measured are kept
            measurements = [json.loads(line) for line in args.raw.read_text().splitlines() if line.strip()]
        done = {m["latent"] for m in measurements}
        for latent in [x for x in [*args.fit, *args.check] if x not in done]:  # a fresh process per resolution
            for m in _run_child(args.estimators, latent, args.k):
                print(json.dumps(m), flush=True)
                measurements.append(m)
                if args.raw is not None:
                    with args.raw.open("a") as fh:
                        fh.write(json.dumps(m) + "\n")
    from largemodel.plan.cost import fit_memory_model

    model = fit_memory_model(measurements, fit_latents=args.fit, check_latents=args.check)
    args.out.write_text(json.dumps(model, indent=2) + "\n")
    for est, entry in model["estimators"].items():
        for chk in entry["checks"]:
            print(f"{est}: predicted {chk['predicted_bytes'] / 2**20:.0f} MiB, measured {chk['measured_bytes'] / 2**20:.0f} MiB "
                  f"at {chk['tokens']} tokens ({100 * chk['relative_error']:+.1f}%)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
