r"""``pfode largemodel explain``: per-image error decomposition, causal test and inverters.

For every image of ``--images`` (a seeded subset) at every resolution of ``--resolutions``,
``largemodel.diagnose.explain.explain_batch`` measures the VAE part, the discrepancy and amplification of
the plain inversion, the alignment with unstable directions, the causal test and the inverters
at equal NFE. Records are one JSON line per (image content, resolution) in ``explain.jsonl``
(``simulate.store.RecordStore``: a rerun with the same parameters skips what is recorded), also
written as ``explain.csv``; ``summary.json`` holds the across-image statistics with bootstrap
intervals (``summarize``) and the figures come from ``largemodel.diagnose.explain_plots``. The output
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

import numpy as np
import torch

from simulate.store import RecordStore, atomic_write_text, claim_folder, json_ready, output_lock

from largemodel.diagnose.explain import INVERTERS, ExplainConfig, explain_batch

__all__ = ["add_explain_parser", "run_explain", "summarize", "write_csv"]

RECORDS = "explain.jsonl"


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _sizes(text: str) -> tuple[float, ...]:
    """``--sizes``: comma-separated sizes, each in ``[PERTURBATION_RMS_MIN, 10]``."""
    from largemodel.study.config import check_perturbation_size

    try:
        values = _floats(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("must give at least one size")
    try:
        return tuple(check_perturbation_size(v, "--sizes") for v in values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--sizes ")) from None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def add_explain_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pfode largemodel explain`` on the ``largemodel`` subcommand group."""
    p = sub.add_parser("explain", help="why an image reconstructs badly: VAE / discrepancy / amplification, "
                                       "causal test, exact inversion, inverters at equal NFE")
    p.add_argument("--model", type=Path, required=True, help="local diffusers model folder")
    p.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output folder, new or pfode's (explain.jsonl, explain.csv, figures; ~ is expanded)")
    p.add_argument("--n-images", type=int, default=24, help="seeded random subset size (default %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="N, steps of G_N and of the inversion (default %(default)s)")
    p.add_argument("--solver", default="euler", help="scheme of G_N: euler, heun, heun-diffusers (default %(default)s)")
    p.add_argument("--resolutions", type=_ints, default=None,
                   help="comma-separated image sides in pixels (default: the model's)")
    p.add_argument("--tol", type=float, default=1e-6, help="exact inversion: relative step tolerance (default %(default)s)")
    p.add_argument("--max-iter", type=int, default=50, help="exact inversion: iterations per step (default %(default)s)")
    p.add_argument("--perturbations", type=int, default=8, help="K for mu_bar(z*) (default %(default)s)")
    p.add_argument("--eps-rms", type=float, default=1e-2,
                   help="RMS size per coordinate of the mu_bar perturbations, in [1e-5, 10] (default %(default)s)")
    p.add_argument("--sizes", type=_sizes, default=(1e-4, 1e-3, 1e-2, 1e-1),
                   help="causal test: comma-separated RMS sizes of delta, each in [1e-5, 10] (below, float32 "
                        "rounding swamps the perturbation) (default 1e-4,1e-3,1e-2,1e-1)")
    p.add_argument("--fixed-size", type=float, default=1e-2, help="size (one of --sizes) for the ranking Spearman")
    p.add_argument("--causal-directions", type=int, default=4, help="random directions per size (default %(default)s)")
    p.add_argument("--power-iters", type=int, default=5, help="power iterations, top direction; 0 disables (default %(default)s)")
    p.add_argument("--budgets", type=_ints, default=(1, 2, 4), help="inverter NFE budgets, multiples of N's (default 1,2,4)")
    p.add_argument("--no-log-lambda", action="store_true", help="skip log Lambda_G (Hutchinson) in the inversion pass")
    p.add_argument("--probes", type=int, default=2, help="Hutchinson probes per evaluation (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, directions and probes (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per transformer call (default %(default)s)")
    p.add_argument("--images-per-batch", type=int, default=8, help="images explained together (default %(default)s)")
    p.add_argument("--dtype", default="auto", help="network dtype: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp64")
    p.add_argument("--device", default=None, help="cuda, cpu... (default: CUDA if available)")
    p.add_argument("--guidance", type=float, default=3.5, help="FLUX guidance-embedding value (default %(default)s)")
    p.set_defaults(handler=_run_cli)


def config_from_args(args: argparse.Namespace) -> ExplainConfig:
    """The run's ``ExplainConfig``; every check names its flag (``ValueError`` before any computing).

    The bounds of the plain numeric flags (``--n-images``, ``--images-per-batch``, ...) are checked
    while parsing, by ``reports.cli_checks.FLAG_RULES``; here only the comma-separated lists.
    """
    if args.resolutions is not None and (not args.resolutions or min(args.resolutions) < 1):
        raise ValueError(f"--resolutions must be positive integers, got {args.resolutions}")
    if not args.images.is_dir():
        raise ValueError(f"--images: {args.images} is not a folder")
    if not args.model.is_dir():
        raise ValueError(f"--model: {args.model} is not a folder")
    return ExplainConfig(
        steps=args.steps, solver=args.solver, tol=args.tol, max_iter=args.max_iter, perturbations=args.perturbations,
        eps_rms=args.eps_rms, sizes=tuple(args.sizes), causal_directions=args.causal_directions, power_iters=args.power_iters,
        fixed_size=args.fixed_size, budgets=tuple(args.budgets), log_lambda=not args.no_log_lambda,
        probes=args.probes, seed=args.seed, batch_size=args.batch_size,
    )


def _run_cli(args: argparse.Namespace) -> int:
    from largemodel.models.load import load_model
    from largemodel.study.items import items_from_folder

    from largemodel.plan.cost import check_explain_budgets, check_resolution_fits

    cfg = config_from_args(args)
    for res in args.resolutions or (None,):  # before allocating: a resolution the device cannot hold
        check_resolution_fits(args.model, res, dtype=args.dtype, device=args.device, flag="--resolutions")
    check_explain_budgets(args.model, cfg.budgets, inverters=len(INVERTERS), steps=cfg.steps, solver=cfg.solver,
                          resolution=max(args.resolutions) if args.resolutions else None)
    claim_folder(args.out, "explain", "pfode largemodel explain")
    model = load_model(args.model, device=args.device, dtype=args.dtype, guidance=args.guidance)
    resolutions = args.resolutions or (model.resolution,)
    for res in resolutions:  # one cheap call per resolution: the model must accept that latent size
        try:
            with torch.no_grad():
                model.velocity(torch.zeros(1, *model.latent_shape(res), device=model.device), 0.5)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"--resolutions: {res} px does not fit this model: {err}") from None
    items = {res: items_from_folder(args.images, args.n_images, args.seed, res, model.image_channels,
                                    exclude=args.out)
             for res in resolutions}
    summary = run_explain(model, items, args.out, cfg, model_id=str(args.model.resolve()),
                          images_per_batch=args.images_per_batch, command="largemodel explain")
    for line in summary_lines(summary):
        print(line)
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'explain.csv'}")
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
        current: list[str] = []  # this run's record keys: the summary and CSV cover them only
        for res, group_items in items.items():
            shape = model.latent_shape(res)
            grid = (lambda s, shape=shape: model.sigmas(s, shape))
            todo = []
            for it in group_items:  # one image policy: an unreadable image is skipped, one warning, a record
                try:
                    pixels = it.load()
                except (ValueError, OSError) as err:
                    key = f"{record_key(it.key, it.content_hash)}@{res}px"
                    if not store.done(key):
                        store.add(key, {"name": it.key, "key": key, "resolution": res, "skipped": str(err)})
                    print(f"pfode: warning: skipped {it.key}: {err}", file=sys.stderr, flush=True)
                    continue
                key = f"{record_key(it.key, it.content_hash or pixel_digest(pixels))}@{res}px"
                current.append(key)
                todo.append((it.key, key, pixels))
            # fixed groups of the whole list: a group cut by a kill is computed whole again and only
            # its missing records are added, so a resume changes no number
            for i in range(0, len(todo), images_per_batch):
                chunk = todo[i : i + images_per_batch]
                if all(store.done(c[1]) for c in chunk):
                    continue
                x = torch.stack([c[2] for c in chunk])
                # each image's draws from its own record key: a resumed run draws what a fresh one would
                gen = image_generators(cfg.seed, [c[1] for c in chunk])
                y = model.encode(x)
                recs, recon = explain_batch(model.velocity, y, grid, cfg, gen)
                img = x.to(model.device, model.state_dtype)
                vae, total = _mse01(model.decode(y), img), _mse01(model.decode(recon), img)
                for (name, key, _), rec, v, t in zip(chunk, recs, vae, total):
                    if store.done(key):
                        continue
                    rec.update(name=name, key=key, resolution=res, vae_mse_pixel=v, mse_pixel=t,
                               vae_share_pixel=(v / t if t > 0 else math.nan))
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


def _share_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """``cov(x, y) / var(y)`` along ``axis``: the share of ``var(y)`` carried by ``x`` when ``y = x + w``."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=axis) / (yc * yc).sum(axis=axis)


def _median_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def _with_ci(x: np.ndarray, y: np.ndarray, stat: Callable[..., np.ndarray], n_boot: int, seed: int) -> dict[str, Any]:
    from largemodel.study.stats import bootstrap_ci

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return {"value": float("nan"), "ci": (float("nan"), float("nan")), "n": int(x.size)}
    ci, method = bootstrap_ci(x, y, stat, n_boot=n_boot, seed=seed, confidence=0.95, method="percentile")
    return {"value": float(stat(x, y)), "ci": ci, "n": int(x.size), "ci_method": method}


def _col(records: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([r.get(key) if r.get(key) is not None else np.nan for r in records], dtype=float)


def summarize(records: Sequence[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    r"""Across-image statistics per resolution, each with a 95% bootstrap interval.

    * ``share_amplification`` / ``share_discrepancy``: ``cov(log e, log A) / var(log e)`` and the same
      with ``D``; they sum to 1 because ``log e = log A + log D`` (up to the identity gap);
    * ``causal_slope_median`` (random directions; expected near 1) and ``causal_slope_top_median``;
    * ``exact_reduction_log10``: median of ``log10(e_plain / ||G_N(z*) - y||)`` at equal ``N``, and
      ``exact_vs_euler_equal_nfe_log10``: the capped fixed point against Euler inversion per NFE budget;
    * ``spearman_fixed_delta``: Spearman(``mu_bar``, error at fixed ``||delta||``), and
      ``spearman_natural``: Spearman(``mu_bar``, plain reconstruction error);
    * ``amp_over_mu_median``, ``lambda_dir_over_mu_median``: alignment with unstable directions;
    * inverters: median error per NFE budget; VAE: median share of the pixel MSE.
    """
    from largemodel.study.stats import correlate

    out: dict[str, Any] = {"n_records": len(records), "by_resolution": {}}
    for res in sorted({r["resolution"] for r in records}):
        rows = [r for r in records if r["resolution"] == res]
        s: dict[str, Any] = {"n_images": len(rows), "n": rows[0]["n"]}
        le, la, ld = (np.log(_col(rows, k)) for k in ("error_latent", "amplification", "discrepancy"))
        s["share_amplification"] = _with_ci(la, le, _share_stat, n_boot, seed)
        s["share_discrepancy"] = _with_ci(ld, le, _share_stat, n_boot, seed)
        for key, name in (("causal_slope_random", "causal_slope_median"), ("causal_slope_top", "causal_slope_top_median"),
                          ("amp_over_mu", "amp_over_mu_median"), ("lambda_dir_over_mu", "lambda_dir_over_mu_median"),
                          ("vae_share_pixel", "vae_share_pixel_median")):
            v = _col(rows, key)
            s[name] = _with_ci(v, v, _median_stat, n_boot, seed)
        red = np.log10(_col(rows, "error_latent") / _col(rows, "exact_final_residual"))
        s["exact_reduction_log10"] = _with_ci(red, red, _median_stat, n_boot, seed)
        s["exact_vs_euler_equal_nfe_log10"] = _equal_nfe_reduction(rows, n_boot, seed)
        s["exact_converged_fraction"] = float(np.mean([bool(r.get("exact_converged")) for r in rows]))
        s["identity_gap_max_relative"] = float(np.nanmax(_col(rows, "identity_gap") / _col(rows, "error_latent")))
        mu = _col(rows, "mu_bar")
        if len(rows) >= 3:
            s["spearman_fixed_delta"] = correlate(np.log(mu), np.log(_col(rows, "error_at_fixed_delta")), n_boot=n_boot, seed=seed)
            s["spearman_natural"] = correlate(np.log(mu), le, n_boot=n_boot, seed=seed)
        for key in ("mu_bar", "error_latent", "discrepancy", "amplification", "log_Lambda", "spectral_norm",
                    "mse_pixel", "vae_mse_pixel"):
            v = _col(rows, key)
            if np.isfinite(v).any():
                s.setdefault("medians", {})[key] = float(np.nanmedian(v))
        lam = _col(rows, "log_Lambda")
        if np.isfinite(lam).any():
            s["P_inst"] = float(np.mean(lam[np.isfinite(lam)] > 0.0))
        s["inverters"] = _inverter_medians(rows)
        out["by_resolution"][str(res)] = s
    return out


def _equal_nfe_reduction(rows: Sequence[dict[str, Any]], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Per budget: median ``log10(e_euler / e_fixed_point)`` over images (0 at the first budget, by construction)."""
    per = [r["inverters"] for r in rows if {"euler", "fixed_point"} <= set(r.get("inverters", {}))]
    if not per:
        return []
    out = []
    for b in range(len(per[0]["euler"]["error"])):
        v = np.log10(np.array([p["euler"]["error"][b] / p["fixed_point"]["error"][b] for p in per], dtype=float))
        out.append({"nfe": per[0]["euler"]["nfe"][b], **_with_ci(v, v, _median_stat, n_boot, seed)})
    return out


def _inverter_medians(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    for name in INVERTERS:
        per = [r["inverters"][name] for r in rows if name in r.get("inverters", {})]
        if not per:
            continue
        errs = np.array([p["error"] for p in per], dtype=float)
        curves[name] = {"nfe": [float(np.median(c)) for c in np.array([p["nfe"] for p in per], dtype=float).T],
                        "median_error": np.median(errs, axis=0).tolist()}
    return curves


def _fmt(d: dict[str, Any], digits: int = 2) -> str:
    lo, hi = d["ci"]
    return f"{d['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few human lines per resolution (printed by the CLI, reused by the report)."""
    lines = []
    for res, s in summary["by_resolution"].items():
        lines.append(
            f"{res}px (n = {s['n']}, {s['n_images']} images): error share amplification {_fmt(s['share_amplification'])}, "
            f"discrepancy {_fmt(s['share_discrepancy'])}; median causal slope {_fmt(s['causal_slope_median'], 3)}; "
            f"exact inversion at equal N: error / 10^{_fmt(s['exact_reduction_log10'], 1)}"
        )
        if s["exact_converged_fraction"] < 1.0:
            lines.append(f"  warning: the exact inversion did not converge for {100 * (1 - s['exact_converged_fraction']):.0f}% "
                         "of the images (exact_converged = false in explain.csv; raise --max-iter or --steps)")
        if "spearman_fixed_delta" in s:
            c, n = s["spearman_fixed_delta"], s["spearman_natural"]
            lines.append(f"  Spearman(mu_bar, error) at fixed ||delta||: {c['spearman_rho']:.2f} "
                         f"[{c['spearman_ci'][0]:.2f}, {c['spearman_ci'][1]:.2f}]; natural error: {n['spearman_rho']:.2f} "
                         f"[{n['spearman_ci'][0]:.2f}, {n['spearman_ci'][1]:.2f}]")
    return lines
