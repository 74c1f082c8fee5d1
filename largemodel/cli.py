"""``pfode largemodel study|gallery|train``: the reconstruction-instability study on real models.

``study`` and ``gallery`` run under ``accelerate launch`` on several GPUs unchanged: images are
split across processes, each writes its own records, the main process merges and summarises.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from largemodel.diagnose.args import (add_conditioning_arguments, add_explain_parser, add_fd_scheme, add_guidance_axis,
                                     add_rank_parser, lazy_handler)
from largemodel.models.routes import DEFAULT_FD_SCHEME, JACOBIAN_ROUTES
from largemodel.training.cli import add_train_arguments

__all__ = ["register"]


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="local diffusers model folder (SD3, SD3.5, FLUX, or trained here)")
    p.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="study folder, new or pfode's (records, figures, summary; ~ is expanded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subset and perturbations (default %(default)s)")
    p.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the model's)")
    p.add_argument("--dtype", default="auto", help="network dtype: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16, fp64")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu... (default: CUDA if available)")
    p.add_argument("--offload", action="store_true", help="keep the VAE on the CPU except while it runs")
    p.add_argument("--guidance", type=float, default=3.5, help="FLUX guidance-embedding value (default %(default)s)")
    p.add_argument("--solver", choices=("euler", "heun", "heun-diffusers"), default="euler",
                   help="ODE solver: euler; heun (Heun on all N steps, 2N evaluations); heun-diffusers "
                        "(FlowMatchHeunDiscreteScheduler: Euler on the last step, 2N-1) (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per transformer call (default %(default)s)")
    p.add_argument("--images-per-batch", type=int, default=1, help="images processed together (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_conditioning_arguments(p)


def register(groups: argparse._SubParsersAction, argv: list[str] | None = None) -> None:
    """Add ``pfode largemodel ...``: every parser is built without importing torch (each command's
    module is imported when it runs); ``argv`` is accepted for the ``register`` protocol and unused."""
    lm = groups.add_parser("largemodel", help="the study on real diffusion models (SD3, SD3.5, FLUX) or models trained here")
    sub = lm.add_subparsers(dest="command", metavar="{study,gallery,train,rank,explain}", parser_class=type(lm))
    sub.required = True

    st = sub.add_parser("study", help="reconstruction error vs instability coefficient (Fig. 4c / A1)")
    _add_model_arguments(st)
    st.add_argument("--n-images", type=int, default=100, help="seeded random subset size (default %(default)s)")
    st.add_argument("--steps", type=int, default=500, help="ODE steps each way (default %(default)s, as the paper)")
    st.add_argument("--perturbations", type=int, default=8, help="K for the averaged coefficient mu_bar (default %(default)s)")
    st.add_argument("--eps-rms", type=float, default=1e-2,
                    help="RMS perturbation size per coordinate, ||D|| = eps_rms sqrt(n), in [1e-5, 10] (below, float32 "
                         "rounding of the regenerations swamps the perturbation) (default %(default)s)")
    st.add_argument("--jvp-directions", type=int, default=1, help="directions for lambda_G by JVP; 0 disables (default %(default)s)")
    st.add_argument("--power-iters", type=int, default=0, help="power iterations for ||J_G||_2; 0 disables (default %(default)s)")
    st.add_argument("--log-lambda", choices=("none", "hutchinson", "exact"), default="none",
                    help="log Lambda_G in the inversion pass (default %(default)s)")
    st.add_argument("--probes", type=int, default=1, help="Hutchinson probes per evaluation (default %(default)s)")
    add_guidance_axis(st)
    st.add_argument("--lambda-method", choices=("auto", "jvp", "fd"), default="auto",
                    help="lambda_G by forward-mode AD (jvp) or central differences batched with the mu_bar rows (fd); "
                         "auto = fd on CUDA, jvp elsewhere (default %(default)s)")
    st.add_argument("--jacobian-route", choices=JACOBIAN_ROUTES, default="auto",
                    help="power iteration's J v and Hutchinson's e^T J e: math-jvp (forward-mode AD on the math attention "
                         "kernel) or vjp-fd (finite differences and reverse mode on the fused kernels); auto = vjp-fd on "
                         "CUDA, math-jvp elsewhere (default %(default)s)")
    add_fd_scheme(st)
    st.add_argument("--jvp-reductions", choices=("fp32", "reduced"), default="fp32",
                    help="bf16/fp16 models: the math attention kernel of every JVP reduces in fp32 (default) or in the "
                         "model's dtype (reduced: cheaper on GPU, bf16 rounding in the JVP)")
    st.add_argument("--plan", nargs="?", const="device", default=None, metavar="GB",
                    help="print the cost plan (FLOPs, time and peak memory per estimator) and exit; GB = device memory "
                         "to plan for (default: this CUDA device's). --model may name sd3.5-medium, sd3.5-large, flux.1-dev")
    st.set_defaults(handler=_run_study)

    ga = sub.add_parser("gallery", help="failure cases: original, reconstruction, difference (App. F)")
    _add_model_arguments(ga)
    ga.add_argument("--n-images", type=int, default=24, help="images to reconstruct (default %(default)s)")
    ga.add_argument("--steps", type=int, default=100, help="ODE steps each way (default %(default)s, as App. F)")
    ga.add_argument("--perturbations", type=int, default=4, help="K for mu_bar shown beside each case (default %(default)s)")
    ga.add_argument("--eps-rms", type=float, default=1e-2, help="RMS perturbation size per coordinate, in [1e-5, 10] (default %(default)s)")
    ga.add_argument("--top", type=int, default=6, help="worst cases shown (default %(default)s)")
    ga.set_defaults(handler=_run_gallery, jvp_directions=0, power_iters=0, log_lambda="none", probes=1,
                    lambda_method="auto", jvp_reductions="fp32", plan=None, jacobian_route="auto",
                    fd_scheme=DEFAULT_FD_SCHEME)

    tr = sub.add_parser("train", help="train a small flow-matching model on offline data (digits, faces, patches)")
    add_train_arguments(tr)
    tr.set_defaults(handler=lazy_handler("largemodel.training.cli", "run_train"))
    add_rank_parser(sub)
    add_explain_parser(sub)


def _distributed() -> Any:
    """This process's ``largemodel.study.launch.Launch`` (rank, world, run id, device); under
    ``accelerate launch`` its ``PartialState`` sets up the process group and picks the device."""
    from largemodel.study.launch import Launch, launch_from_env

    device = None
    try:
        import os

        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            from accelerate import PartialState

            device = str(PartialState().device)
    except ImportError:  # accelerate is optional: torch.distributed is set up by launch_from_env
        pass
    launch = launch_from_env()
    return Launch(launch.rank, launch.world, launch.run_id, device or launch.device)


def _study(args: argparse.Namespace, kind: str = "study") -> tuple[Path, dict[str, Any] | None, Any]:
    from largemodel.models.captions import conditioning_args
    from largemodel.models.conditioning import check_guidance_scale
    from largemodel.models.load import load_model
    from largemodel.study.items import selected_prompts
    from largemodel.study.ode import warn_solver
    from largemodel.study.runner import items_from_folder, run_study, summarize
    from simulate.store import claim_folder

    launch = _distributed()
    rank, world = launch.rank, launch.world
    device = args.device if args.device is not None else (launch.device if world > 1 else None)
    cfg = _study_config(args)
    if args.n_images < 1:
        raise ValueError(f"--n-images must be >= 1, got {args.n_images}")
    from largemodel.plan.commands import check_before_run

    check_guidance_scale(args.guidance_scale)
    prompt, captions = conditioning_args(args)  # read and checked against the images before any model loads
    prompts = [] if captions is None else selected_prompts(args.images, args.n_images, args.seed, captions, exclude=args.out)
    check_before_run(args.model, cfg, resolution=args.resolution, dtype=args.dtype, device=device, out=args.out,
                     guidance_scale=args.guidance_scale)
    claim_folder(args.out, kind, f"pfode largemodel {kind}")  # before the prompt cache is written there
    model = load_model(args.model, device=device, dtype=args.dtype, offload=args.offload, guidance=args.guidance,
                       resolution=args.resolution, prompt=prompt, prompts=prompts, guidance_scale=args.guidance_scale,
                       prompt_cache=args.out)
    warn_solver(args.solver, model.family)
    items = items_from_folder(args.images, args.n_images, args.seed, model.resolution, model.image_channels,
                              exclude=args.out, captions=captions)
    progress = not args.no_progress and sys.stderr.isatty() and rank == 0
    # no barrier after the run: rank 0 waits for the other ranks' records while they progress
    run_study(model, items, args.out, cfg, model_id=str(args.model.resolve()), rank=rank, world=world,
              run_id=launch.run_id, progress=progress)
    summary = summarize(args.out, title=f"{model.family}: {args.model.name}") if rank == 0 else None
    return args.out, summary, (model, items)


def _study_config(args: argparse.Namespace) -> Any:
    from largemodel.study.runner import StudyConfig

    return StudyConfig(
        steps=args.steps, solver=args.solver, perturbations=args.perturbations, eps_rms=args.eps_rms,
        jvp_directions=args.jvp_directions, power_iters=args.power_iters, log_lambda=args.log_lambda,
        jacobian_route=args.jacobian_route, fd_scheme=args.fd_scheme,
        lambda_method=args.lambda_method, jvp_reductions=args.jvp_reductions, probes=args.probes, batch_size=args.batch_size,
        images_per_batch=args.images_per_batch, seed=args.seed,
    )


def _print_plan(args: argparse.Namespace, scales: tuple[float, ...] | None = None) -> int:
    """``--plan``: the study's plan, or with ``--guidance-scales`` the axis's (every W and prompt mode priced)."""
    from largemodel.plan.commands import plan_memory_arg, study_plan
    from largemodel.plan.cost import axis_plan, format_plan
    from largemodel.study.guidance import axis_modes

    cfg, dev = _study_config(args), plan_memory_arg(args.plan, args.device)
    plans = [study_plan(args.model, cfg, resolution=args.resolution, dtype=args.dtype, device_bytes=dev,
                        lambda_method=args.lambda_method, out=args.out, guidance_scale=w)
             for w in (scales or (args.guidance_scale,))]
    print(format_plan(axis_plan(plans, modes=axis_modes(args)) if scales is not None else plans[0]))
    return 0


def _study_axis(args: argparse.Namespace, scales: tuple[float, ...]) -> int:
    """``study --guidance-scales``: ``run_study`` once per (prompt mode, W) in ``<out>/<mode>_w<W>``, then
    the axis's table, figure and paired changes (``largemodel.study.guidance``, docs/theory.md §10.9)."""
    from largemodel.models.captions import conditioning_args
    from largemodel.models.load import load_model
    from largemodel.plan.commands import check_before_run
    from largemodel.study.guidance import axis_items, guidance_lines, run_guidance_axis
    from largemodel.study.items import selected_prompts
    from largemodel.study.runner import items_from_folder, load_records, run_study
    from simulate.store import claim_folder

    if _distributed().world > 1:
        raise ValueError("--guidance-scales runs in one process: launch it without torchrun")
    cfg = _study_config(args)
    prompt, captions = conditioning_args(args)
    prompts = [] if captions is None else selected_prompts(args.images, args.n_images, args.seed, captions, exclude=args.out)
    check_before_run(args.model, cfg, resolution=args.resolution, dtype=args.dtype, device=args.device, out=args.out,
                     guidance_scale=max(scales))
    claim_folder(args.out, "study", "pfode largemodel study")
    model = load_model(args.model, device=args.device, dtype=args.dtype, offload=args.offload, guidance=args.guidance,
                       resolution=args.resolution, prompt=prompt, prompts=prompts, prompt_cache=args.out)
    items, modes = axis_items(items_from_folder(args.images, args.n_images, args.seed, model.resolution,
                                                model.image_channels, exclude=args.out, captions=captions), prompt)

    def measure(m: Any, its: list[Any], sub: Path) -> list[dict[str, Any]]:
        claim_folder(sub, "study", "pfode largemodel study")
        run_study(m, its, sub, cfg, model_id=str(args.model.resolve()), save_images=False, progress=False)
        meta = json.loads((sub / "study.json").read_text())
        return [{**r, "name": r["key"]} for r in load_records(sub, meta["signature"], keys=meta["keys"])]

    effects = run_guidance_axis(model, items, args.out, scales, measure, modes=modes, seed=args.seed)
    for line in guidance_lines(effects):
        print(line)
    print(f"wrote {effects['csv']}, {effects['figure']}, {args.out / 'guidance.json'}")
    return 0


def _run_study(args: argparse.Namespace) -> int:
    from largemodel.study.guidance import check_axis_flags

    scales = check_axis_flags(args)  # before any model loads
    if args.plan is not None:
        return _print_plan(args, scales)
    if scales is not None:
        return _study_axis(args, scales)
    out, summary, _ = _study(args)
    if summary is None:
        return 0
    main = summary["correlations"].get("mu_bar~mse_latent")
    print(f"{summary['n_images']} images; median latent MSE {summary['medians'].get('mse_latent', float('nan')):.3g}, "
          f"median mu_bar {summary['medians'].get('mu_bar', float('nan')):.3g}")
    if main is not None:
        lo, hi = main["spearman_ci"]
        print(f"Spearman(mu_bar, error) = {main['spearman_rho']:.3f} [{lo:.3f}, {hi:.3f}], p = {main['spearman_p']:.2g}")
    print(f"wrote {out / 'summary.json'}" + (f"\nwrote {summary['figure']}" if "figure" in summary else ""))
    return 0


def _run_gallery(args: argparse.Namespace) -> int:
    from largemodel.models.images import load_image
    from largemodel.study.plots import failure_gallery
    from largemodel.study.runner import load_records, recon_path

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    out, summary, (model, items) = _study(args, kind="gallery")
    if summary is None:
        return 0
    meta = json.loads((out / "study.json").read_text())
    records = sorted(load_records(out, meta["signature"], keys=meta.get("keys")), key=lambda r: r["psnr"])[: args.top]
    by_key = {it.key: it for it in items}
    rows = []
    for r in records:
        if r["key"] not in by_key:
            continue
        recon = load_image(recon_path(out, r["record_key"]), model.resolution, channels=model.image_channels)
        numbers = {"PSNR": r["psnr"]}
        if "mu_bar" in r:
            numbers["mu_bar"] = r["mu_bar"]
        rows.append({"name": r["key"], "original": by_key[r["key"]].load(), "reconstruction": recon, "numbers": numbers})
    path = failure_gallery(rows, out / "gallery.png", title=f"worst reconstructions, {args.steps} steps ({args.solver})")
    print(f"wrote {path}")
    return 0


def _json_default(o: Any) -> Any:  # pragma: no cover - debugging aid
    return str(o)
