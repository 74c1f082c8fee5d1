"""``pfode theory ...``: Theorem 4.3's bounds for given parameters, and the curves over n."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from theory.highdim.defaults import CURVE_DEFAULTS

__all__ = ["register"]


#: what each of the bounds' parameters means (the help of ``bound`` and ``curves`` alike)
_PARAMETER_HELP = {
    "m": "number of mixture components of p_g",
    "sigma": "Gaussian neighbour width sigma of p_g",
    "side": "side l of the cube holding each component's support",
    "tau": "instability threshold on Lambda_G",
    "eps": "c_n = (1 + eps) n, the threshold on ||F(x)||^2",
    "rho_max": "density bound of p_r on [0,1]^n",
    "density_ratio": "K >= 1 with p_r <= K p_g",
}


def register(groups: argparse._SubParsersAction, argv: list[str] | None = None) -> None:
    """Add the ``theory`` sub-commands to the ``pfode`` parser (imports nothing numeric: the
    handlers import what they run)."""
    theory = groups.add_parser("theory", help="the paper's bounds (Theorem 4.3) in log space")
    cmds = theory.add_subparsers(dest="command", metavar="{bound,curves}")
    cmds.required = True

    bound = cmds.add_parser("bound", help="p1, p2 and P_inst bounds of Theorem 4.3 for one dimension n")
    bound.add_argument("--n", type=int, required=True, help="dimension n >= 1")
    for key in ("m", "sigma", "side", "tau"):
        kind = int if key == "m" else float
        bound.add_argument(f"--{key}", type=kind, default=kind(CURVE_DEFAULTS[key]),
                           help=f"{_PARAMETER_HELP[key]} (default %(default)s)")
    bound.add_argument("--c", type=float, default=None, help="threshold c on ||F(x)||^2 (default 1.1 n)")
    for key in ("rho_max", "density_ratio"):
        bound.add_argument(f"--{key.replace('_', '-')}", type=float, default=CURVE_DEFAULTS[key],
                           help=f"{_PARAMETER_HELP[key]} (default %(default)s)")
    bound.add_argument("--json", action="store_true", help="print one JSON object")
    bound.set_defaults(handler=_run_bound)

    curves = cmds.add_parser("curves", help="plots and JSON of the bounds over n = 1 .. 10^7")
    curves.add_argument("--out", type=Path, default=Path("theory-curves"), help="output folder, new or pfode's (~ is expanded; default %(default)s)")
    curves.add_argument("--num", type=int, default=200, help="number of dimensions on the log grid (default %(default)s)")
    curves.add_argument("--n-max", type=float, default=1e7, help="largest dimension (default %(default)g)")
    for key in ("m", "sigma", "side", "tau", "eps", "rho_max", "density_ratio"):
        kind = int if key == "m" else float
        curves.add_argument(f"--{key.replace('_', '-')}", type=kind, default=kind(CURVE_DEFAULTS[key]),
                            help=f"{_PARAMETER_HELP[key]} (default %(default)s)")
    curves.set_defaults(handler=_run_curves)


def _explain_derived(exc: ValueError, args: argparse.Namespace, flags: str) -> ValueError:
    """``exc`` unchanged when it names a parameter of the command (the ``pfode`` parser restates it
    with the flag, e.g. ``rho_max`` -> ``--rho-max``); a quantity derived from several flags (``r``
    = r*) is explained as such, ``flags`` naming those flags."""
    name, _, _ = str(exc).partition(" ")
    if name in vars(args):
        return exc
    return ValueError(f"{flags} give a bound outside float64 ({exc}); use less extreme values")


def _json_number(value: float) -> float | None:
    """JSON has no infinities: a log-probability of exactly 0 (``-inf``) is written as null."""
    return value if math.isfinite(value) else None


def _run_bound(args: argparse.Namespace) -> int:
    from theory.highdim.thm43 import instability_bounds

    c = 1.1 * args.n if args.c is None else args.c
    try:
        result = instability_bounds(args.n, args.m, args.sigma, args.side, args.tau, c, args.rho_max, args.density_ratio)
    except ValueError as exc:
        raise _explain_derived(exc, args, "--sigma, --tau and --c (through r*)") from None
    if args.json:
        print(json.dumps({k: _json_number(v) if isinstance(v, float) else v for k, v in result.items()}))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value:.10g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0


def _run_curves(args: argparse.Namespace) -> int:
    from theory.highdim.curves import write_theory_curves
    from theory.output.files import claim_folder

    claim_folder(args.out, "curves", "pfode theory curves")
    try:
        out = write_theory_curves(
            args.out, num=args.num, n_max=args.n_max, m=args.m, sigma=args.sigma, side=args.side, tau=args.tau,
            eps=args.eps, rho_max=args.rho_max, density_ratio=args.density_ratio,
        )
    except ValueError as exc:
        raise _explain_derived(exc, args, "--sigma, --tau and --eps (through r*)") from None
    print(f"wrote {out['json']}")
    for fig in out["figures"]:
        print(f"wrote {fig}")
    return 0
