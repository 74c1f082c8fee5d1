r"""``pfode largemodel explain``: per-image error decomposition, linearization and inverters.

For every image of ``--images`` (a seeded subset) at every resolution of ``--resolutions``,
``largemodel.diagnose.explain.explain_batch`` measures the VAE part, the discrepancy and amplification of
the plain inversion, the linearization at the real discrepancy, the alignment with unstable directions,
the differentiability check and the inverters at equal NFE with ``G_N``'s floor. Records are one JSON line per (image content, resolution) in ``explain.jsonl``
(``simulate.store.RecordStore``: a rerun with the same parameters skips what is recorded), also
written as ``explain.csv``; ``summary.json`` holds the across-image statistics with bootstrap
intervals (``largemodel.diagnose.explain_summary.summarize``) and the figures come from ``largemodel.diagnose.explain_plots``. The output
folder is held with ``simulate.store.output_lock`` for the whole run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from simulate.store import RecordStore, atomic_write_text, claim_folder, json_ready, output_lock

from largemodel.diagnose.explain import INVERTERS, ExplainConfig, explain_batch
from largemodel.diagnose.explain_summary import summarize, summary_lines

__all__ = ["run_cli", "run_explain", "summarize", "write_csv"]

RECORDS = "explain.jsonl"


def config_from_args(args: argparse.Namespace) -> ExplainConfig:
    """The run's ``ExplainConfig``; every check names its flag (``ValueError`` before any computing).

    The bounds of the plain numeric flags (``--n-images``, ``--images-per-batch``, ...) are checked
    while parsing, by ``reports.cli_checks.FLAG_RULES``; here only the comma-separated lists.
    """
    if args.resolutions is not None and (not args.resolutions or min(args.resolutions) < 1):
        raise ValueError(f"--resolutions must be positive integers, got {args.resolutions}")
    if getattr(args, "plan", None) is None:  # a plan reads no image and may name an architecture
        if not args.images.is_dir():
            raise ValueError(f"--images: {args.images} is not a folder")
        if not args.model.is_dir():
            raise ValueError(f"--model: {args.model} is not a folder")
    return ExplainConfig(
        steps=args.steps, solver=args.solver, tol=args.tol, max_iter=args.max_iter, perturbations=args.perturbations,
        eps_rms=args.eps_rms, sizes=tuple(args.sizes), causal_directions=args.causal_directions, power_iters=args.power_iters,
        fixed_size=args.fixed_size, budgets=tuple(args.budgets), log_lambda=not args.no_log_lambda, floor=not args.no_floor,
        probes=args.probes, seed=args.seed, batch_size=args.batch_size, jacobian_route=args.jacobian_route,
        fd_scheme=args.fd_scheme,
    )


def run_cli(args: argparse.Namespace) -> int:
    from largemodel.models.load import load_model
    from largemodel.plan.commands import (check_explain_budgets, check_plan, check_resolution_fits, explain_plan,
                                          plan_memory_arg, print_plan)
    from largemodel.models.captions import conditioning_args
    from largemodel.models.conditioning import check_guidance_scale
    from largemodel.study.items import items_from_folder, selected_prompts
    from largemodel.study.ode import warn_solver

    from largemodel.study.guidance import check_axis_flags

    cfg = config_from_args(args)
    check_guidance_scale(args.guidance_scale)
    scales = check_axis_flags(args)  # --guidance-scales: one run per prompt mode and W (docs/theory.md §10.9)
    if scales is not None and args.resolutions is not None and len(args.resolutions) > 1:
        raise ValueError("--guidance-scales takes one resolution: give --resolutions a single value")
    w_max = args.guidance_scale if scales is None else max(scales)  # the pre-run check: the costliest condition
    prompt, captions = conditioning_args(args)  # read and checked against the images before any model loads
    prompts = [] if captions is None else selected_prompts(args.images, args.n_images, args.seed, captions, exclude=args.out)
    plan_for = lambda res, dev, w=w_max: explain_plan(args.model, cfg, resolution=res, dtype=args.dtype,  # noqa: E731
                                                      images_per_batch=args.images_per_batch, device_bytes=dev,
                                                      out=args.out, guidance_scale=w)
    if args.plan is not None:
        dev = plan_memory_arg(args.plan, args.device)
        if scales is not None:  # the axis: every W and prompt mode priced (one resolution)
            from largemodel.plan.cost import axis_plan
            from largemodel.study.guidance import axis_modes

            res = args.resolutions[0] if args.resolutions else None
            return print_plan(axis_plan([plan_for(res, dev, w) for w in scales], modes=axis_modes(args)))
        return max(print_plan(plan_for(res, dev)) for res in args.resolutions or (None,))
    for res in args.resolutions or (None,):  # before allocating: a resolution the device cannot hold
        check_resolution_fits(args.model, res, dtype=args.dtype, device=args.device, flag="--resolutions")
        check_plan(lambda dev, res=res: plan_for(res, dev), args.device)
    check_explain_budgets(args.model, cfg.budgets, inverters=len(INVERTERS), steps=cfg.steps, solver=cfg.solver,
                          resolution=max(args.resolutions) if args.resolutions else None)
    claim_folder(args.out, "explain", "pfode largemodel explain")
    model = load_model(args.model, device=args.device, dtype=args.dtype, guidance=args.guidance, prompt=prompt,
                       prompts=prompts, guidance_scale=args.guidance_scale, prompt_cache=args.out)
    warn_solver(args.solver, model.family)
    resolutions = args.resolutions or (model.resolution,)
    for res in resolutions:  # one cheap call per resolution: the model must accept that latent size
        try:
            with torch.no_grad():
                model.velocity(torch.zeros(1, *model.latent_shape(res), device=model.device), 0.5)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"--resolutions: {res} px does not fit this model: {err}") from None
    items = {res: items_from_folder(args.images, args.n_images, args.seed, res, model.image_channels,
                                    exclude=args.out, captions=captions)
             for res in resolutions}
    if scales is not None:
        return _explain_axis(model, items, args, cfg, scales, prompt)
    summary = run_explain(model, items, args.out, cfg, model_id=str(args.model.resolve()),
                          images_per_batch=args.images_per_batch, command="largemodel explain")
    for line in summary_lines(summary):
        print(line)
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'explain.csv'}")
    return 0


def _explain_axis(model: Any, items: dict[int, list[Any]], args: argparse.Namespace, cfg: ExplainConfig,
                  scales: tuple[float, ...], prompt: str | None) -> int:
    """``--guidance-scales``: ``run_explain`` once per (prompt mode, W) in ``<out>/<mode>_w<W>``, then the
    axis's table, figure and paired changes (``largemodel.study.guidance``)."""
    from largemodel.study.guidance import axis_items, guidance_lines, run_guidance_axis

    [(res, group)] = items.items()
    group, modes = axis_items(group, prompt)

    def measure(m: Any, its: list[Any], sub: Path) -> list[dict[str, Any]]:
        claim_folder(sub, "explain", "pfode largemodel explain")
        run_explain(m, {res: its}, sub, cfg, model_id=str(args.model.resolve()), images_per_batch=args.images_per_batch,
                    command="largemodel explain")
        return list(csv.DictReader(io.StringIO((sub / "explain.csv").read_text())))

    effects = run_guidance_axis(model, group, args.out, scales, measure, modes=modes, seed=args.seed)
    for line in guidance_lines(effects):
        print(line)
    print(f"wrote {effects['csv']}, {effects['figure']}, {args.out / 'guidance.json'}")
    return 0


def _mse01(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per-row MSE of images in [-1, 1], on the [0, 1] scale."""
    return (((a - b) / 2.0).to(torch.float64) ** 2).flatten(1).mean(1).tolist()


def run_explain(
    model: Any, items: dict[int, Sequence[Any]], out: str | Path, cfg: ExplainConfig, *, model_id: str,
    images_per_batch: int = 8, command: str = "largemodel explain",
    on_record: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Explain (or resume) ``items[resolution]`` for each resolution; write records, CSV, summary, figures.

    Args:
        model: a loaded ``FlowModel``.
        items: ``largemodel.study.items.ImageItem`` lists per resolution (pixels at that side).
        out: the output folder (locked for the run).
        model_id: identifies the model in the resume signature.
    """
    from largemodel.study.items import image_generators, pixel_digest, record_key

    out = Path(out)
    with output_lock(out, command=command):
        params = {"config": cfg.signature_params(), "model": model_id, "dtype": str(model.dtype),
                  "guidance": model.guidance}
        store = RecordStore(out, params, name=RECORDS)
        cond0 = getattr(model, "conditioning", None)  # the experiments' stand-in fields have none
        w, base = (cond0.guidance_scale, cond0.prompt) if cond0 is not None else (1.0, "")
        current: list[str] = []  # this run's record keys: the summary and CSV cover them only
        for res, group_items in items.items():
            shape = model.latent_shape(res)
            grid = (lambda s, shape=shape: model.sigmas(s, shape))
            todo = []
            for it in group_items:  # one image policy: an unreadable image is skipped, one warning, a record
                cond = (it.prompt if it.prompt is not None else base, w)  # in the key
                try:
                    pixels = it.load()
                except (ValueError, OSError) as err:
                    key = f"{record_key(it.key, it.content_hash, *cond)}@{res}px"
                    if not store.done(key):
                        store.add(key, {"name": it.key, "key": key, "resolution": res, "skipped": str(err)})
                    print(f"pfode: warning: skipped {it.key}: {err}", file=sys.stderr, flush=True)
                    continue
                key = f"{record_key(it.key, it.content_hash or pixel_digest(pixels), *cond)}@{res}px"
                current.append(key)
                todo.append((it.key, key, pixels, cond[0]))
            # fixed groups of the whole list: a group cut by a kill is computed whole again and only
            # its missing records are added, so a resume changes no number
            for i in range(0, len(todo), images_per_batch):
                chunk = todo[i : i + images_per_batch]
                if all(store.done(c[1]) for c in chunk):
                    continue
                for prompt in dict.fromkeys(c[3] for c in chunk):  # one conditioning per sub-group
                    sub = [c for c in chunk if c[3] == prompt]
                    m = model if prompt == base else model.conditioned(prompt)
                    x = torch.stack([c[2] for c in sub])
                    # each image's draws from its own record key: a resumed run draws what a fresh one would
                    gen = image_generators(cfg.seed, [c[1] for c in sub])
                    y = m.encode(x)
                    recs, recon = explain_batch(m.velocity, y, grid, cfg, gen, network_dtype=m.dtype)
                    img = x.to(m.device, m.state_dtype)
                    vae, total = _mse01(m.decode(y), img), _mse01(m.decode(recon), img)
                    for (name, key, _, _), rec, v, t in zip(sub, recs, vae, total):
                        if store.done(key):
                            continue
                        rec.update(name=name, key=key, resolution=res, vae_mse_pixel=v, mse_pixel=t,
                                   vae_share_pixel=(v / t if t > 0 else math.nan),
                                   **(m.conditioning.record() if cond0 is not None else {}))
                        store.add(key, rec)
                        if on_record is not None:
                            on_record(key, rec)
        records = [store.get(k) for k in dict.fromkeys(current) if store.done(k)]  # this run's images only
        if not records:
            raise ValueError("--images: none of the selected images can be read")
        write_csv(records, out / "explain.csv")
        summary = summarize(records)
        summary["figures"] = _figures(records, out)
        atomic_write_text(out / "summary.json", json.dumps(json_ready(summary), indent=1))
    return summary


def _figures(records: list[dict[str, Any]], out: Path) -> list[str]:
    from largemodel.diagnose.explain_plots import decomposition_figure, nfe_figure

    figs = []
    for res in sorted({r["resolution"] for r in records}):
        rows = [r for r in records if r["resolution"] == res]
        figs.append(str(decomposition_figure(rows, out / f"decomposition_{res}px.png")))
        figs.append(str(nfe_figure(rows, out / f"error_vs_nfe_{res}px.png")))
    return figs


def write_csv(records: list[dict[str, Any]], path: Path) -> Path:
    """One row per record with its scalar fields (lists and nested fields left to the JSON lines)."""
    cols: list[str] = []
    for r in records:
        cols += [k for k, v in r.items() if k not in cols and not isinstance(v, (list, dict))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({k: r.get(k) for k in cols})
    return atomic_write_text(path, buf.getvalue())
