r"""The plans and pre-run checks of ``pfode largemodel study``, ``explain`` and ``rank``.

Each command's ``--plan [GB]`` prints its phases (``largemodel.plan.cost``: rows, FLOPs, time and
peak memory per image, the text encoders' phase first) and exits; before a run, on CUDA, the same
plan is checked against the device's memory and a run that does not fit stops with one line naming
the phase and a flag that fits, before any weight is loaded. Plans are of GPU runs: route ``auto``
is ``vjp-fd`` (``largemodel.models.routes``), ``--dtype auto`` is bf16.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from largemodel.models.routes import DEFAULT_FD_SCHEME, resolve_route
from largemodel.plan import cost
from largemodel.plan.arch import KNOWN_MODELS, PlanArch, arch_from_config, known_arch
from largemodel.plan.cost import EstimatorCost, Plan, PlanError
from largemodel.plan.encoders import encoder_phase

__all__ = ["study_plan", "explain_plan", "rank_plan", "plan_memory_arg", "check_plan", "check_before_run",
           "check_resolution_fits", "check_explain_budgets", "EXPLAIN_MAX_EVALUATIONS", "print_plan"]

#: most network evaluations per image that ``explain``'s inverter comparison may spend (inverters x
#: sum of ``--budgets`` x the plain inversion's NFE): the defaults spend 2,800 at N = 100, budgets
#: (1, 2, 4, 8) at N = 1000 spend 60,000
EXPLAIN_MAX_EVALUATIONS = 100_000


def _arch_and_resolution(model: str | Path, resolution: int | None) -> tuple[PlanArch, int]:
    """The architecture of a model folder (or a ``KNOWN_MODELS`` name) and the run's resolution."""
    from largemodel.models.folder import inspect_folder

    if str(model) in KNOWN_MODELS and not Path(model).exists():
        arch = known_arch(str(model))
        return arch, int(resolution) if resolution is not None else 1024
    info = inspect_folder(model)
    cfg = info.transformer_config
    factor = 8 if info.has_vae else 1
    tokens = None
    if info.null_prompt_file is not None:
        from safetensors import safe_open

        with safe_open(str(info.null_prompt_file), framework="pt") as fh:
            tokens = int(fh.get_slice("prompt_embeds").get_shape()[1])
    arch = arch_from_config(cfg, name=Path(model).name, text_tokens=tokens, vae_factor=factor)
    native = int(info.meta.get("resolution", int(cfg.get("sample_size", 128)) * factor))
    return arch, int(resolution) if resolution is not None else native


def _dtype(dtype: str) -> str:
    return "bf16" if dtype == "auto" else dtype


def _start(model: str | Path, resolution: int | None, *, command: str, steps: int, solver: str, dtype: str,
           device_bytes: float | None, route: str, out: str | Path | None, guidance_scale: float,
           fd_scheme: str = DEFAULT_FD_SCHEME) -> Plan:
    arch, res = _arch_and_resolution(model, resolution)
    plan = cost.new_plan(arch, resolution=res, steps=steps, solver=solver, dtype=_dtype(dtype), device_bytes=device_bytes,
                         command=command, route=resolve_route(route, "cuda"), guidance_scale=guidance_scale,
                         fd_scheme=fd_scheme)
    enc = cost.encoder_cost(plan, encoder_phase(model, arch.family, out=out))
    plan.estimators = [enc] if enc is not None else []
    return plan


def study_plan(model: str | Path, cfg: Any, *, resolution: int | None, dtype: str, device_bytes: float | None,
               lambda_method: str, out: str | Path | None = None, guidance_scale: float = 1.0) -> Plan:
    """The plan of ``pfode largemodel study`` with config ``cfg`` (a ``StudyConfig``)."""
    arch, res = _arch_and_resolution(model, resolution)
    plan = _start(model, resolution, command="study", steps=cfg.steps, solver=cfg.solver, dtype=dtype,
                  device_bytes=device_bytes, route=getattr(cfg, "jacobian_route", "auto"), out=out,
                  guidance_scale=guidance_scale, fd_scheme=getattr(cfg, "fd_scheme", DEFAULT_FD_SCHEME))
    study = cost.make_plan(
        arch, resolution=res, steps=cfg.steps, solver=cfg.solver, dtype=_dtype(dtype),
        perturbations=cfg.perturbations, jvp_directions=cfg.jvp_directions,
        lambda_method=lambda_method if lambda_method != "auto" else "fd", power_iters=cfg.power_iters,
        log_lambda=cfg.log_lambda, probes=cfg.probes, batch_size=cfg.batch_size, images_per_batch=cfg.images_per_batch,
        device_bytes=device_bytes, route=plan.route, guidance_scale=guidance_scale, fd_scheme=plan.fd_scheme,
    )
    study.estimators = plan.estimators + study.estimators
    study.notes = plan.notes + study.notes
    return cost.price(study)


def explain_plan(model: str | Path, cfg: Any, *, resolution: int | None, dtype: str, images_per_batch: int,
                 device_bytes: float | None, out: str | Path | None = None, guidance_scale: float = 1.0) -> Plan:
    """The plan of ``pfode largemodel explain`` with config ``cfg`` (an ``ExplainConfig``), per image."""
    from largemodel.study.ode import nfe_per_map

    plan = _start(model, resolution, command="explain", steps=cfg.steps, solver=cfg.solver, dtype=dtype,
                  device_bytes=device_bytes, route=cfg.jacobian_route, out=out, guidance_scale=guidance_scale,
                  fd_scheme=cfg.fd_scheme)
    nfe, b, g = nfe_per_map(cfg.solver, cfg.steps), images_per_batch, cost._cfg_rows(plan)
    bs = min(cfg.batch_size, b)
    ests = [cost.inversion_cost(plan, nfe=nfe, b=b, log_lambda="hutchinson" if cfg.log_lambda else "none",
                                probes=cfg.probes)]
    ests.append(EstimatorCost("exact inversion (at most)", "--images-per-batch", (1 + cfg.max_iter) * nfe * g, b * g,
                              "forward_row", per_unit=g))
    if cfg.power_iters > 0:
        ests += cost.power_costs(plan, nfe=nfe, b=b, iters=cfg.power_iters, name="power iteration (top)")
    if plan.route == "math-jvp":
        ests.append(EstimatorCost("linear prediction (JVP)", "--batch-size", nfe * g, bs * g, "jvp_row", per_unit=g))
    else:  # one recorded regeneration, then d difference rows per evaluation
        traj, d = cost.recorded_trajectory(plan, nfe=nfe, b=bs)
        ests.append(EstimatorCost(f"linear prediction ({plan.fd_scheme} differences)", "--batch-size", (1 + d) * nfe * g,
                                  d * bs * g, "forward_row", kept_bytes=traj, per_unit=d * g))
    krows = 2 + cfg.perturbations + len(cfg.sizes) * cfg.causal_directions + (len(cfg.sizes) if cfg.power_iters else 0)
    ests.append(EstimatorCost("regenerations (mu_bar, causal)", "--batch-size", krows * nfe * g,
                              min(cfg.batch_size, krows * b) * g, "forward_row", "k_batch", per_unit=g))
    ests.append(EstimatorCost("inverters at equal NFE", "--images-per-batch", 4 * sum(cfg.budgets) * nfe * g, b * g,
                              "forward_row", per_unit=g))
    regen = 4 * len(cfg.budgets) + (4 if cfg.floor else 0)
    ests.append(EstimatorCost("regenerations of the inverters", "--batch-size", regen * nfe * g,
                              min(cfg.batch_size, regen * b) * g, "forward_row", "k_batch", per_unit=g))
    if cfg.floor:
        plan.notes.append(f"not priced: G_N's floor (an adaptive solve) and 3 inverters at the exact inversion's NFE "
                          f"(at most 3 x {(1 + cfg.max_iter) * nfe:,} forward rows); --no-floor skips them")
    plan.estimators += ests
    return cost.price(plan)


def rank_plan(model: str | Path, cfg: Any, *, resolution: int | None, dtype: str, images_per_batch: int, verify: int,
              device_bytes: float | None, out: str | Path | None = None, guidance_scale: float = 1.0) -> Plan:
    """The plan of ``pfode largemodel rank`` with config ``cfg`` (a ``ScoreConfig``), per image."""
    from largemodel.study.ode import nfe_per_map

    plan = _start(model, resolution, command="rank", steps=cfg.steps, solver=cfg.solver, dtype=dtype,
                  device_bytes=device_bytes, route=cfg.jacobian_route, out=out, guidance_scale=guidance_scale)
    nfe = nfe_per_map(cfg.solver, cfg.steps)
    plan.estimators.append(cost.inversion_cost(plan, nfe=nfe, b=images_per_batch, probes=cfg.probes,
                                               log_lambda="hutchinson" if cfg.divergence else "none"))
    if verify:
        plan.notes.append(f"--verify {verify}: {2 * verify} reconstructions per run ({nfe:,} forward rows each), "
                          "not per image")
    return cost.price(plan)


def plan_memory_arg(value: str, device: str | None) -> float | None:
    """``--plan [GB]``: the device memory to plan for in bytes (``device``'s own for a bare ``--plan``)."""
    if value == "device":
        return cost.device_memory(device)
    try:
        dev_bytes = float(value) * 1e9
    except ValueError:
        raise ValueError(f"--plan takes a device memory in GB, got {value!r}") from None
    if not (dev_bytes > 0 and math.isfinite(dev_bytes)):
        raise ValueError(f"--plan GB must be a positive, finite number, got {value!r}")
    return dev_bytes


def print_plan(plan: Plan) -> int:
    print(cost.format_plan(plan))
    return 0


def check_plan(plan_for: Any, device: str | None) -> None:
    """On CUDA, build the plan for the device's memory (``plan_for(device_bytes)``) and refuse it if it does not fit."""
    dev_bytes = cost.device_memory(device)
    if dev_bytes is not None:
        cost.check_fits(plan_for(dev_bytes))


def check_before_run(model: str | Path, cfg: Any, *, resolution: int | None, dtype: str, device: str | None,
                     out: str | Path | None = None, guidance_scale: float = 1.0) -> None:
    """Refuse, before any weight is loaded, a study that cannot run: ``--log-lambda exact`` above
    ``EXACT_LOG_LAMBDA_MAX_DIM`` dimensions, or (on CUDA) a plan over the device's memory."""
    from largemodel.study.instability import check_exact_dim
    from largemodel.study.ode import nfe_per_map

    if cfg.log_lambda == "exact":
        arch, res = _arch_and_resolution(model, resolution)
        check_exact_dim(arch.latent_numel(res), evaluations=nfe_per_map(cfg.solver, cfg.steps))
    check_plan(lambda dev: study_plan(model, cfg, resolution=resolution, dtype=dtype, device_bytes=dev,
                                      lambda_method=cfg.lambda_method, out=out, guidance_scale=guidance_scale), device)


def check_resolution_fits(model: str | Path, resolution: int | None, *, dtype: str, device: str | None,
                          flag: str = "--resolution") -> None:
    """Refuse, before any weight is loaded, a resolution at which a single row of the heaviest
    per-row phase (a JVP row under the math attention kernel) does not fit the device: weights +
    runtime reserve + one row's activation peak over the memory of ``device`` (a CUDA device's total
    memory, the host's available memory on the CPU). The message gives the estimate.

    Raises:
        PlanError: naming ``flag``, the resolution, the estimate and the memory.
    """
    import torch

    from largemodel.models.weights import available_memory

    arch, res = _arch_and_resolution(model, resolution)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "bf16" if dtype == "auto" and dev.type == "cuda" else ("fp32" if dtype == "auto" else dtype)
    if name not in cost._DTYPE_BYTES:
        return  # an unknown dtype is refused by the loader, with its own message
    tokens = arch.image_tokens(res) + arch.text_tokens
    row = cost.activation_bytes(cost.load_memory_model(), "jvp_row", arch, tokens) * cost._DTYPE_BYTES[name] / 2
    need = arch.parameters * cost._DTYPE_BYTES[name] + cost.RUNTIME_RESERVE + row
    have = available_memory(dev)
    if need > have:
        raise PlanError(f"{flag} {res}: one image at {res} px ({tokens:,} tokens) needs about {need / 1e9:,.1f} GB "
                        f"(plan: weights, reserve and one JVP row), more than the {have / 1e9:,.1f} GB of "
                        f"{dev.type} memory; refused before loading")


def check_explain_budgets(model: str | Path, budgets: tuple[int, ...], *, inverters: int, steps: int, solver: str,
                          resolution: int | None) -> None:
    """Refuse, before loading, ``explain --budgets`` whose inverter comparison the plan prices above
    ``EXPLAIN_MAX_EVALUATIONS`` network evaluations per image; the message gives the count and the
    plan's time per image at its GPU rate (forward rows, ``EFFICIENCY`` of ``DEFAULT_TFLOPS``).

    Raises:
        PlanError: naming ``--budgets``, the evaluations and the priced time.
    """
    from largemodel.study.ode import nfe_per_map

    evaluations = int(inverters) * sum(int(b) for b in budgets) * nfe_per_map(solver, steps)
    if evaluations <= EXPLAIN_MAX_EVALUATIONS:
        return
    arch, res = _arch_and_resolution(model, resolution)
    seconds = evaluations * arch.forward_flops(res) / (cost.DEFAULT_TFLOPS * 1e12 * cost.EFFICIENCY["forward_row"])
    priced = f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds:,.2g} s"
    raise PlanError(f"--budgets {','.join(str(b) for b in budgets)}: the inverter comparison would spend "
                    f"{evaluations:,} network evaluations per image ({inverters} inverters x {sum(budgets):,} x "
                    f"{nfe_per_map(solver, steps)}), over the limit of {EXPLAIN_MAX_EVALUATIONS:,} (plan: {priced} "
                    f"per image on a {cost.DEFAULT_TFLOPS:.0f} TFLOP/s GPU); refused before loading")
