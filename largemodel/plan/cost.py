r"""Cost plan of a large-model run: rows, FLOPs, time per image and peak memory of each phase.

Printed by ``pfode largemodel study|explain|rank --plan`` before any weight is loaded, and checked
against the device's memory before a run: a plan that does not fit stops the run with one line
naming the phase and the flag that would fit it. The phases of a study (one image, ``N`` steps,
``nfe`` network evaluations per map, docs/theory.md §10.4, §10.6):

* ``text encoders``: the null prompt encoded before the transformer loads (``largemodel.plan.encoders``);
* ``inversion``: ``F~(x)``, 1 forward row x ``nfe``; with ``--log-lambda hutchinson`` on route
  ``math-jvp`` ``probes`` JVP rows x ``nfe`` (math attention), on route ``vjp-fd`` one forward row
  with a graph and ``probes`` input-gradient backward passes per evaluation (fused kernels);
* ``k_batch``: the reconstruction ``G(z~)`` and the ``K`` perturbed regenerations of ``mu_bar``
  (plus the ``2 D`` central-difference rows of ``lambda`` by ``--lambda-method fd``);
* ``jvp``: ``lambda_G`` by forward-mode AD, ``D`` JVP rows x ``nfe`` (math attention);
* ``power``: ``||J_G||_2``, per iteration ``J v`` (route ``math-jvp``: one JVP row per evaluation;
  ``vjp-fd``: one forward row with ``--fd-scheme forward``, whose base value is the velocity recorded
  on the trajectory, two with ``central``) and ``J^T w`` (one checkpointed step: a forward
  recomputation and an input-gradient backward per evaluation), plus one forward regeneration that
  builds the graph. SD3.5 Medium, 1024 px, 500 Euler steps, 10 iterations, bf16: ``J v`` 151 s by
  forward differences (303 s by central ones) and ``J^T w`` 404 s per image, 9.25 min in all (11.8
  min with central differences), against 41.3 min for the JVP rows on the math kernel before issue 27.

With classifier-free guidance (``guidance_scale != 1``) every network call carries the conditional
and the unconditional rows: rows, FLOPs and activations double. A guidance axis
(``--guidance-scales W1,W2,...``, :func:`axis_plan`) runs every phase once per scale and prompt mode:
its rows, FLOPs and time are the sums over the runs (``W = 1`` without unconditional rows), its
peaks those of the costliest run.

Memory: weights (at the network's dtype) + a runtime reserve + the activation peak of the
heaviest phase at its row count, from ``memory_model.json`` (``largemodel.plan.memory``: measured on
the CPU with the full-size SD3.5 Medium transformer, ``a + b T + c T^2`` in the joint token count
``T``). The ``c T^2`` term is attention's score matrices: a GPU plan drops it for every row on the
fused kernels (forward rows, VJP steps) and keeps it for JVP rows (math kernel), in fp32 whatever
the model's dtype (the kernel upcasts bf16), so ``--dtype fp32`` doubles ``a + b T`` only.
Kept tensors are added: the recorded trajectory of route ``vjp-fd`` (its points, and their velocities
for forward differences) and the checkpoint's step inputs.

Time: forward FLOPs (hand count) over the device's bf16 GEMM ceiling times an efficiency
(``EFFICIENCY``: calibrated on an H200 with SD3.5 Medium at 1024 px: a forward row 0.47, a JVP
row under the math kernel 0.036). Rows on the fused kernels (forward, finite differences, VJP
steps) are priced at the forward's efficiency per FLOP, a VJP step at ``1 + backward_factor``
forwards (``PlanArch.backward_factor``: input gradients only, the parameters are frozen). An
estimate, not a measurement: the VJP's efficiency was not measured on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from largemodel.plan.arch import KNOWN_MODELS, PlanArch, arch_from_config, flux_forward_flops, known_arch
from largemodel.plan.encoders import EncoderPhase
from largemodel.models.routes import DEFAULT_FD_SCHEME
from largemodel.plan.memory import MEMORY_MODEL, activation_bytes, fit_memory_model, load_memory_model

__all__ = [
    "MEMORY_MODEL", "KNOWN_MODELS", "PlanError", "PlanArch", "EstimatorCost", "Plan", "arch_from_config",
    "flux_forward_flops", "load_memory_model", "fit_memory_model", "make_plan", "format_plan", "check_fits",
    "activation_bytes", "known_arch",
    "new_plan", "price", "axis_plan", "inversion_cost", "power_costs", "recorded_trajectory", "encoder_cost", "device_memory",
]

GIB = 2**30
#: CUDA context, allocator slack and kernels' workspaces (bytes), added to every peak
RUNTIME_RESERVE = 2 * GIB
#: measured dense bf16 GEMM ceiling of an H100 / H200 (TFLOP/s); the data sheet's 989 is not reached
DEFAULT_TFLOPS = 790.0
#: forward-FLOPs per second of a row as a fraction of the GEMM ceiling, calibrated on an H200 (SD3.5
#: Medium, 1024 px, bf16, issue 14): a forward row 0.03 s = 11.25 TFLOP -> 0.47 of 790 TFLOP/s; a JVP
#: row 0.4 s (fp32 math attention) -> 0.036. Fused-kernel rows (differences, VJP steps) at the forward's.
EFFICIENCY = {"forward_row": 0.47, "jvp_row": 0.036}
#: FLOPs of a JVP row over a forward row's (primal and tangent through every product, ~3x)
JVP_FLOPS = 3.0
_DTYPE_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4, "fp64": 8, "float64": 8}


class PlanError(ValueError):
    """A run whose plan does not fit the device (the message names the phase and a flag)."""


@dataclass
class EstimatorCost:
    name: str
    flag: str  # the flag that controls it
    rows: int  # network rows per image
    rows_at_once: int  # rows per network call
    kind: str  # forward_row | jvp_row | vjp_row (speed) | encoders
    memory: str = ""  # the memory model's estimator (default: kind)
    fwd_equiv: float = 0.0  # fused kinds: forward-row FLOPs per image in forwards (0: rows)
    kept_bytes: float = 0.0  # tensors kept across calls (trajectory, step inputs)
    own_weights: float = 0.0  # kind encoders: its weights instead of the transformer's
    per_unit: int = 1  # rows per call per unit of its flag (CFG, difference pairs, probes)
    flops: float = 0.0  # per image
    seconds: float = 0.0  # per image
    row_bytes: float = 0.0  # activations of one row
    peak_bytes: float = 0.0  # weights + reserve + kept + activations of one call


@dataclass
class Plan:
    arch: PlanArch
    resolution: int
    steps: int
    solver: str
    dtype: str
    device_bytes: float | None
    tflops: float
    weights_bytes: float
    command: str = "study"
    route: str = "vjp-fd"
    guidance_scale: float = 1.0
    fd_scheme: str = DEFAULT_FD_SCHEME
    guidance_scales: tuple[float, ...] = ()  # a guidance axis: the scales summed over (axis_plan)
    modes: int = 1  # a guidance axis: prompt modes per scale
    estimators: list[EstimatorCost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def peak_bytes(self) -> float:
        return max(e.peak_bytes for e in self.estimators)

    @property
    def seconds_per_image(self) -> float:
        return sum(e.seconds for e in self.estimators)


def new_plan(arch: PlanArch, *, resolution: int, steps: int, solver: str, dtype: str, device_bytes: float | None,
             tflops: float = DEFAULT_TFLOPS, command: str = "study", route: str = "vjp-fd",
             guidance_scale: float = 1.0, fd_scheme: str = DEFAULT_FD_SCHEME) -> Plan:
    """An empty plan (validated dtype, route and difference scheme); phases are added, then :func:`price` d."""
    from largemodel.models.routes import check_fd_scheme, check_route

    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"--dtype must be one of {sorted(_DTYPE_BYTES)} for a plan, got {dtype!r}")
    if check_route(route) == "auto":
        raise ValueError("a plan needs a resolved route (math-jvp or vjp-fd)")
    if not guidance_scale > 0:
        raise ValueError(f"--guidance-scale must be positive, got {guidance_scale!r}")
    return Plan(arch, resolution, steps, solver, dtype, device_bytes, tflops, float(arch.parameters * _DTYPE_BYTES[dtype]),
                command=command, route=route, guidance_scale=guidance_scale, fd_scheme=check_fd_scheme(fd_scheme))


def _cfg_rows(plan: Plan) -> int:
    """Rows per image in a network call: 2 with classifier-free guidance (conditional and unconditional)."""
    return 1 if plan.guidance_scale == 1.0 else 2


def encoder_cost(plan: Plan, phase: EncoderPhase) -> EstimatorCost | None:
    """The text encoders' phase (weights only), or ``None`` (with a note) when it is skipped."""
    if phase.skipped or not phase.parameters:
        plan.notes.append(f"text encoders: not loaded ({phase.skipped or 'the folder has none'})")
        return None
    return EstimatorCost(f"text encoders ({', '.join(phase.names)})", "--out (null-prompt cache)", 0, 0, "encoders",
                         own_weights=float(phase.parameters * _DTYPE_BYTES[plan.dtype]))


def _state_bytes(plan: Plan) -> int:
    return 8 if plan.dtype in ("fp64", "float64") else 4


def inversion_cost(plan: Plan, *, nfe: int, b: int, log_lambda: str = "none", probes: int = 1,
                   flag: str = "--images-per-batch") -> EstimatorCost:
    """The inversion, with the divergence integral of ``log Lambda_G`` by the plan's route."""
    a, g = plan.arch, _cfg_rows(plan)
    if log_lambda == "exact":
        n = a.latent_numel(plan.resolution)
        return EstimatorCost("inversion + exact trace", "--log-lambda", n * nfe * g, min(n, 64) * b * g, "jvp_row")
    if log_lambda == "hutchinson" and plan.route == "math-jvp":
        return EstimatorCost("inversion + hutchinson (JVP)", f"--probes/{flag}", probes * nfe * g, probes * b * g, "jvp_row",
                             per_unit=probes * g)
    if log_lambda == "hutchinson":
        bf = a.backward_factor(plan.resolution)
        return EstimatorCost("inversion + hutchinson (VJP)", flag, nfe * g, b * g, "vjp_row",
                             fwd_equiv=nfe * g * (1 + probes * bf), per_unit=g)
    return EstimatorCost("inversion", flag, nfe * g, b * g, "forward_row", per_unit=g)


def power_costs(plan: Plan, *, nfe: int, b: int, iters: int, name: str = "power iteration") -> list[EstimatorCost]:
    """Power iteration's ``J v`` and ``J^T w`` halves by the plan's route (module docstring)."""
    a, g = plan.arch, _cfg_rows(plan)
    bf = a.backward_factor(plan.resolution)
    latent = float(a.latent_numel(plan.resolution) * _state_bytes(plan) * b)
    inputs = plan.steps * latent  # the checkpoint's step inputs
    vjp = EstimatorCost(f"{name} (VJP)", "--images-per-batch", iters * nfe * g, b * g, "vjp_row",
                        fwd_equiv=iters * nfe * g * (1 + bf) + nfe * g, kept_bytes=inputs, per_unit=g)
    if plan.route == "math-jvp":
        jvp = EstimatorCost(f"{name} (JVP)", "--images-per-batch", iters * nfe * g, b * g, "jvp_row", kept_bytes=inputs,
                            per_unit=g)
    else:  # the recorded trajectory is kept while both halves run
        traj, d = recorded_trajectory(plan, nfe=nfe, b=b)
        jvp = EstimatorCost(f"{name} (J v, {plan.fd_scheme} differences)", "--images-per-batch", d * iters * nfe * g,
                            d * b * g, "forward_row", kept_bytes=inputs + traj, per_unit=d * g)
        vjp.kept_bytes += traj
    return [jvp, vjp]


def recorded_trajectory(plan: Plan, *, nfe: int, b: int) -> tuple[float, int]:
    """Route ``vjp-fd``'s ``J v`` by the plan's ``fd_scheme``: the bytes of the recorded trajectory
    (``nfe`` points of ``b`` latents, and their velocities for forward differences) and the network
    rows per evaluation and row of ``v`` (forward 1, central 2)."""
    forward = plan.fd_scheme == "forward"
    latent = float(plan.arch.latent_numel(plan.resolution) * _state_bytes(plan) * b)
    return (2 if forward else 1) * nfe * latent, 1 if forward else 2


def price(plan: Plan, memory_model: dict[str, Any] | None = None, *, fused: bool = True) -> Plan:
    """FLOPs, seconds and peak bytes of every phase of ``plan`` (``fused``: a GPU with fused attention)."""
    mm = memory_model if memory_model is not None else load_memory_model()
    a = plan.arch
    tokens = a.image_tokens(plan.resolution) + a.text_tokens
    fwd = float(a.forward_flops(plan.resolution))
    nbytes = _DTYPE_BYTES[plan.dtype]
    base = plan.weights_bytes + RUNTIME_RESERVE
    for e in plan.estimators:
        if e.kind == "encoders":
            e.peak_bytes = e.own_weights + RUNTIME_RESERVE
            continue
        if e.kind == "jvp_row":
            e.flops = e.rows * JVP_FLOPS * fwd
            e.seconds = e.rows * fwd / (plan.tflops * 1e12 * EFFICIENCY["jvp_row"])
        else:
            eq = e.fwd_equiv or float(e.rows)
            e.flops = eq * fwd
            e.seconds = eq * fwd / (plan.tflops * 1e12 * EFFICIENCY["forward_row"])
        mem = e.memory or e.kind
        if mem == "k_batch" and e.rows_at_once == 1:
            mem = "forward_row"
        lin = activation_bytes(mm, mem, a, tokens, terms="linear") * nbytes / 2  # measured in bf16
        if mem == "jvp_row":  # score matrices in fp32 (fp64 for an fp64 model) on the math kernel
            quad = activation_bytes(mm, mem, a, tokens, terms="quadratic") * max(1.0, nbytes / 4)
        else:
            quad = 0.0 if fused else activation_bytes(mm, mem, a, tokens, terms="quadratic") * nbytes / 2
        e.row_bytes = lin + quad
        e.peak_bytes = base + e.kept_bytes + e.rows_at_once * e.row_bytes
    return plan


def axis_plan(plans: list[Plan], *, modes: int = 1) -> Plan:
    """The plan of a guidance axis: one run per prompt mode (``modes``) and scale (one priced plan per
    ``W`` in ``plans``, the same phases). Rows and forward-equivalents per image are summed over the
    runs, rows per call and kept tensors are those of the costliest run (a ``W != 1`` run's, with the
    unconditional rows), then priced: time is the sum, peaks the costliest run's."""
    if not plans or modes < 1:
        raise ValueError("a guidance axis needs at least one scale and one prompt mode")
    names = [e.name for e in plans[0].estimators]
    if any([e.name for e in p.estimators] != names for p in plans):
        raise ValueError("the plans of a guidance axis must have the same phases")
    top = max(plans, key=_cfg_rows)
    out = replace(top, estimators=[replace(e) for e in top.estimators], notes=list(top.notes), modes=modes,
                  guidance_scales=tuple(p.guidance_scale for p in plans))
    for i, e in enumerate(out.estimators):
        e.rows = modes * sum(p.estimators[i].rows for p in plans)
        e.fwd_equiv = modes * sum(p.estimators[i].fwd_equiv for p in plans)
    return price(out)


def make_plan(
    arch: PlanArch,
    *,
    resolution: int,
    steps: int,
    solver: str = "euler",
    dtype: str = "bf16",
    perturbations: int = 8,
    jvp_directions: int = 1,
    lambda_method: str = "fd",
    power_iters: int = 0,
    log_lambda: str = "none",
    probes: int = 1,
    batch_size: int = 16,
    images_per_batch: int = 1,
    device_bytes: float | None = None,
    tflops: float = DEFAULT_TFLOPS,
    memory_model: dict[str, Any] | None = None,
    route: str = "vjp-fd",
    guidance_scale: float = 1.0,
    encoders: EncoderPhase | None = None,
    fd_scheme: str = DEFAULT_FD_SCHEME,
) -> Plan:
    """The cost of a study with these options (see the module docstring for the accounting)."""
    from largemodel.study.ode import nfe_per_map

    plan = new_plan(arch, resolution=resolution, steps=steps, solver=solver, dtype=dtype, device_bytes=device_bytes,
                    tflops=tflops, route=route, guidance_scale=guidance_scale, fd_scheme=fd_scheme)
    nfe, b, g = nfe_per_map(solver, steps), images_per_batch, _cfg_rows(plan)
    ests: list[EstimatorCost | None] = [encoder_cost(plan, encoders) if encoders is not None else None]
    ests.append(inversion_cost(plan, nfe=nfe, b=b, log_lambda=log_lambda, probes=probes))
    fd_rows = 2 * jvp_directions if lambda_method == "fd" else 0
    krows = 1 + perturbations + fd_rows
    ests.append(EstimatorCost("regenerations (K-batch" + (" + fd lambda)" if fd_rows else ")"), "--batch-size",
                              krows * nfe * g, min(batch_size, krows * b) * g, "forward_row", "k_batch", per_unit=g))
    if jvp_directions > 0 and lambda_method == "jvp":
        ests.append(EstimatorCost("lambda by JVP", "--batch-size", jvp_directions * nfe * g,
                                  min(batch_size, jvp_directions * b) * g, "jvp_row", per_unit=g))
    if power_iters > 0:
        ests.extend(power_costs(plan, nfe=nfe, b=b, iters=power_iters))
    plan.estimators = [e for e in ests if e is not None]
    return price(plan, memory_model)


def format_plan(plan: Plan) -> str:
    """The plan as a table (one line per phase)."""
    a = plan.arch
    dev = f"{plan.device_bytes / 1e9:.0f} GB" if plan.device_bytes else "unknown memory"
    cfg = f", guidance {plan.guidance_scale:g} (rows x2)" if plan.guidance_scale != 1.0 else ""
    if plan.guidance_scales:
        cfg = (f", guidance axis W = {', '.join(f'{w:g}' for w in plan.guidance_scales)} x {plan.modes} prompt "
               f"mode{'s' * (plan.modes > 1)} (rows summed over the runs; x2 where W != 1)")
    route = plan.route + (f" ({plan.fd_scheme} differences)" if plan.route == "vjp-fd" else "")
    lines = [
        f"plan ({plan.command}): {a.name} ({a.parameters / 1e9:.2f} B parameters, {plan.dtype} weights "
        f"{plan.weights_bytes / 1e9:.1f} GB), {plan.resolution} px = {a.image_tokens(plan.resolution):,} image + "
        f"{a.text_tokens} text tokens, {plan.steps} {plan.solver} steps, route {route}{cfg}; device {dev}, "
        f"{plan.tflops:.0f} TFLOP/s",
        f"  {'phase':40s} {'rows/img':>9s} {'rows/call':>9s} {'PFLOP/img':>10s} {'s/img':>8s} {'peak GB':>8s}",
    ]
    for e in plan.estimators:
        fits = "" if plan.device_bytes is None or e.peak_bytes <= plan.device_bytes else "  DOES NOT FIT"
        rows = (f"{e.rows:9,d} {e.rows_at_once:9d} {e.flops / 1e15:10.1f} {e.seconds:8.0f}" if e.kind != "encoders"
                else f"{'-':>9s} {'-':>9s} {'-':>10s} {'-':>8s}")
        lines.append(f"  {e.name:40s} {rows} {e.peak_bytes / 1e9:8.1f}{fits}")
    lines.append(f"  total per image: {plan.seconds_per_image / 60:.1f} min; peak {plan.peak_bytes / 1e9:.1f} GB")
    lines += [f"  {note}" for note in plan.notes]
    if plan.device_bytes is not None:
        try:
            check_fits(plan)
            lines.append(f"  fits on {plan.device_bytes / 1e9:.0f} GB")
        except PlanError as exc:
            lines.append(f"  does not fit: {exc}")
    return "\n".join(lines)


def check_fits(plan: Plan) -> None:
    """Raise ``PlanError`` (one line) if a phase's peak exceeds the device's memory."""
    if plan.device_bytes is None:
        return
    over = [e for e in plan.estimators if e.peak_bytes > plan.device_bytes]
    if not over:
        return
    e = max(over, key=lambda x: x.peak_bytes)
    base = plan.weights_bytes + RUNTIME_RESERVE + e.kept_bytes
    fit = int((plan.device_bytes - base) // e.row_bytes) // e.per_unit if e.row_bytes > 0 else 0
    math_kernel = e.kind == "jvp_row" and plan.route == "math-jvp" and e.name != "lambda by JVP"
    if e.kind == "encoders":
        hint = ("the text encoders are moved to the device together before the transformer loads: run once where they "
                "fit (the null prompt is then cached in --out and they are skipped)")
    elif base >= plan.device_bytes:
        hint = "the weights alone do not fit: use a GPU with more memory"
    elif fit >= 1 and e.flag.endswith(("--batch-size", "--images-per-batch")):
        hint = f"{e.flag.split('/')[-1]} {fit} fits"
        if e.name == "lambda by JVP":
            hint += " (or --lambda-method fd)"
        elif math_kernel:
            hint += " (or --jacobian-route vjp-fd)"
    elif math_kernel:
        hint = "--jacobian-route vjp-fd fits better (no score matrices on the fused kernels)"
    elif "power iteration" in e.name:
        hint = "--power-iters 0 fits"
    else:
        hint = "no batch setting fits: drop this phase"
    calls = "their weights and the reserve" if e.kind == "encoders" else f"{e.rows_at_once} rows per call"
    raise PlanError(f"{e.name} needs {e.peak_bytes / 1e9:.1f} GB with {calls} on a "
                    f"{plan.device_bytes / 1e9:.0f} GB device; {hint}")


# ---- the device (the commands' plans and checks: largemodel.plan.commands) ------------------------


def device_memory(device: str | None) -> float | None:
    """Total memory of a CUDA device in bytes (``None`` on the CPU or without CUDA)."""
    import torch

    if not torch.cuda.is_available() or (device is not None and not str(device).startswith("cuda")):
        return None
    return float(torch.cuda.get_device_properties(torch.device(device or "cuda")).total_memory)

