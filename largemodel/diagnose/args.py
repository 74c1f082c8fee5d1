"""The flags of ``pfode largemodel rank`` and ``pfode largemodel explain``, without torch.

The parsers are built here, importing nothing heavy, so that ``pfode largemodel rank --help`` answers
at once; each handler names its module (``lazy_handler``), imported only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any, Callable

from largemodel.diagnose.score_names import DEFAULT_RISK, ONE_PASS_SCORES
from largemodel.models.routes import DEFAULT_FD_SCHEME, FD_SCHEMES, JACOBIAN_ROUTES

__all__ = ["add_conditioning_arguments", "add_explain_parser", "add_fd_scheme", "add_guidance_axis", "add_rank_parser",
           "add_route_and_plan", "lazy_handler"]


class _Given(argparse.Action):
    """Stores the value and notes ``<dest>_given`` (so ``--guidance-scale 1`` given is told from the default)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_guidance_axis(p: argparse.ArgumentParser) -> None:
    """``--guidance-scales W1,W2,...`` (study, explain; docs/theory.md §10.9): one run per prompt mode and W."""
    p.add_argument("--guidance-scales", default=None, metavar="W1,W2,...",
                   help="guidance as a study axis: each image measured at every W (>= 1, e.g. 1,3.5,7) with the empty "
                        "prompt and (with --prompt or --captions) its caption; guidance.csv, guidance.json, guidance.png "
                        "with paired changes vs the smallest W; excludes --guidance-scale")


def add_conditioning_arguments(p: argparse.ArgumentParser) -> None:
    """``--prompt``, ``--captions``, ``--guidance-scale`` (study, gallery, rank, explain; docs/theory.md §10.7)."""
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="one prompt for every image (default: the null prompt, as without it)")
    p.add_argument("--captions", type=Path, default=None, metavar="FILE",
                   help="a prompt per image: CSV with columns file,prompt, JSONL {\"file\", \"prompt\"}, or PIE-Bench's "
                        "mapping_file.json as is (original_prompt, brackets removed); file = path relative to --images; "
                        "every image needs one and every caption must name an image")
    p.add_argument("--guidance-scale", type=float, default=1.0, metavar="W", action=_Given,
                   help="classifier-free guidance scale W >= 1 as the model's diffusers pipeline applies it, "
                        "u_u + W (u_c - u_u) on the null prompt and the prompt; 1 = none, one pass (default %(default)s)")


def lazy_handler(module: str, name: str) -> Callable[[argparse.Namespace], Any]:
    """A command handler that imports ``module`` and calls its ``name(args)`` when the command runs."""

    def handler(args: argparse.Namespace) -> Any:
        return getattr(importlib.import_module(module), name)(args)

    handler.__qualname__ = f"{module}.{name}"
    return handler


def add_route_and_plan(p: argparse.ArgumentParser) -> None:
    """``--jacobian-route`` and ``--plan [GB]``, as ``pfode largemodel study`` has them."""
    p.add_argument("--jacobian-route", choices=JACOBIAN_ROUTES, default="auto",
                   help="Jacobian products (Hutchinson, power iteration): math-jvp (forward-mode AD on the math attention "
                        "kernel) or vjp-fd (reverse mode and finite differences on the fused kernels); auto = vjp-fd on "
                        "CUDA, math-jvp elsewhere (default %(default)s)")
    p.add_argument("--plan", nargs="?", const="device", default=None, metavar="GB",
                   help="print the cost plan (rows, FLOPs, time and peak memory per phase) and exit; GB = device memory to "
                        "plan for (default: this CUDA device's). --model may name sd3.5-medium, sd3.5-large, flux.1-dev")


def add_fd_scheme(p: argparse.ArgumentParser) -> None:
    """``--fd-scheme`` (study, explain): the differences of route ``vjp-fd``'s ``J v``."""
    p.add_argument("--fd-scheme", choices=FD_SCHEMES, default=DEFAULT_FD_SCHEME,
                   help="route vjp-fd's J v (power iteration, explain's linear prediction): forward differences from the "
                        "velocity recorded on the trajectory (one network row per evaluation; in bf16 the spectral norm "
                        "measured within 1.2%% (SD3) / 3.6%% (FLUX) of the fp64 value on tiny models, power iteration's "
                        "own error at 10 iterations being 0.6-4%%) or central differences (two rows, 0.3%% / 1.7%%); "
                        "docs/theory.md 10.6 (default %(default)s)")


def add_rank_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pfode largemodel rank`` on the ``largemodel`` subcommand group."""
    p = sub.add_parser("rank", help="rank images by predicted reconstruction risk from one inversion pass")
    p.add_argument("--model", type=Path, required=True, help="local diffusers model folder")
    p.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output folder, new or pfode's (ranking.csv, gallery, records; ~ is expanded)")
    p.add_argument("--verify", type=int, default=0, help="reconstruct the top and bottom K to check (default 0)")
    p.add_argument("--risk", choices=ONE_PASS_SCORES, default=DEFAULT_RISK, help="score to rank by (default %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="ODE steps of the inversion (default %(default)s)")
    p.add_argument("--solver", default="euler", help="ODE solver: euler, heun, heun-diffusers (default %(default)s)")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per evaluation (default %(default)s)")
    p.add_argument("--inversion-only", action="store_true",
                   help="plain inversion, no divergence integral: only the inversion scores (no extra cost)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes (default %(default)s)")
    p.add_argument("--gallery", type=int, default=8,
                   help="riskiest images in the gallery; 0 writes no gallery, as --verify 0 verifies none "
                        "(default %(default)s)")
    p.add_argument("--images-per-batch", type=int, default=8, help="images inverted together (default %(default)s)")
    p.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the model's)")
    p.add_argument("--dtype", default="auto", help="network dtype: auto, fp32, bf16, fp16, fp64")
    p.add_argument("--device", default=None, help="cuda, cpu... (default: CUDA if available)")
    p.add_argument("--guidance", type=float, default=3.5, help="FLUX guidance-embedding value (default %(default)s)")
    add_conditioning_arguments(p)
    add_route_and_plan(p)
    p.set_defaults(handler=lazy_handler("largemodel.diagnose.rank", "run_rank"))


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
    p = sub.add_parser("explain", help="why an image reconstructs badly: discrepancy x amplification, linearization "
                                       "at the real discrepancy, exact inversion, inverters at equal NFE")
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
                   help="differentiability check: comma-separated RMS sizes of delta, each in [1e-5, 10] (below, "
                        "float32 rounding swamps the perturbation) (default 1e-4,1e-3,1e-2,1e-1)")
    p.add_argument("--fixed-size", type=float, default=1e-2, help="size (one of --sizes) for mu_bar's test-retest reliability")
    p.add_argument("--causal-directions", type=int, default=4, help="random directions per size (default %(default)s)")
    p.add_argument("--power-iters", type=int, default=5, help="power iterations, top direction; 0 disables (default %(default)s)")
    p.add_argument("--budgets", type=_ints, default=(1, 2, 4), help="inverter NFE budgets, multiples of N's (default 1,2,4)")
    p.add_argument("--no-floor", action="store_true",
                   help="skip G_N's discretization floor (adaptive F) and the inverters at the exact inversion's NFE")
    p.add_argument("--no-log-lambda", action="store_true", help="skip log Lambda_G (Hutchinson) in the inversion pass")
    p.add_argument("--probes", type=int, default=2, help="Hutchinson probes per evaluation (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, directions and probes (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per transformer call (default %(default)s)")
    p.add_argument("--images-per-batch", type=int, default=8, help="images explained together (default %(default)s)")
    p.add_argument("--dtype", default="auto", help="network dtype: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp64")
    p.add_argument("--device", default=None, help="cuda, cpu... (default: CUDA if available)")
    p.add_argument("--guidance", type=float, default=3.5, help="FLUX guidance-embedding value (default %(default)s)")
    add_conditioning_arguments(p)
    add_guidance_axis(p)
    add_route_and_plan(p)
    add_fd_scheme(p)
    p.set_defaults(handler=lazy_handler("largemodel.diagnose.explain_cli", "run_cli"))
