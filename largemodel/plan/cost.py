r"""Cost plan of a large-model study: FLOPs, time per image and peak memory of each estimator.

Printed by ``pfode largemodel study --plan`` before any weight is loaded, and checked against
the device's memory before a run: a plan that does not fit stops the run with one line naming
the estimator and the flag that would fit it.

Estimators (one image, ``N`` steps, ``nfe`` network evaluations per map, docs/theory.md):

* ``inversion``: ``F~(x)``, 1 forward row x ``nfe``;
* ``k_batch``: the reconstruction ``G(z~)`` and the ``K`` perturbed regenerations of ``mu_bar``
  (plus the ``2 D`` central-difference rows of ``lambda`` by ``--lambda-method fd``), forward
  rows in batches of ``--batch-size``;
* ``jvp``: ``lambda_G`` by forward-mode AD, ``D`` JVP rows x ``nfe`` (math attention);
* ``power``: ``||J_G||_2``, per iteration one JVP row and one VJP row per step;
* ``hutchinson``: ``log Lambda_G`` in the inversion pass, ``probes`` JVP rows x ``nfe``
  (replacing the plain inversion).

Memory: weights (parameters and buffers at the network's dtype) + a runtime reserve + the
activation peak of the heaviest estimator at its row count. Activation peaks per row come from
``memory_model.json``: measured on the CPU with the full-size SD3.5 Medium transformer
(``benchmarks/measure_memory_model.py``: peak resident bytes of one step of each estimator,
fitted as ``a + b T + c T^2`` in the joint token count ``T`` on four resolutions, checked at a
fifth, larger one).
Other architectures scale the fit: the linear term with the width, the quadratic term with the
number of heads, and both with the number of blocks for the VJP (it keeps every block's
activations of one step), an extrapolation the check does not cover.

Time: forward FLOPs (hand count, ``largemodel.models.fullsize.sd3_forward_flops`` or
``flux_forward_flops``) over the device's measured bf16 GEMM ceiling times the efficiency of each
kind of row (``EFFICIENCY``: calibrated on an H200 with SD3.5 Medium at 1024 px). An estimate,
not a measurement: GPU time was not available to check it on the other models.

The architecture and its FLOPs (``PlanArch``, ``KNOWN_MODELS``) are ``largemodel.plan.arch``; the
memory model is ``largemodel.plan.memory``; both are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from largemodel.plan.arch import KNOWN_MODELS, PlanArch, arch_from_config, flux_forward_flops, known_arch
from largemodel.plan.memory import MEMORY_MODEL, activation_bytes, fit_memory_model, load_memory_model

__all__ = [
    "MEMORY_MODEL", "KNOWN_MODELS", "PlanError", "PlanArch", "EstimatorCost", "Plan", "arch_from_config",
    "flux_forward_flops", "load_memory_model", "fit_memory_model", "make_plan", "format_plan", "check_fits",
    "activation_bytes", "known_arch", "check_resolution_fits", "check_explain_budgets", "EXPLAIN_MAX_EVALUATIONS",
]

GIB = 2**30
#: CUDA context, allocator slack and kernels' workspaces (bytes), added to every peak
RUNTIME_RESERVE = 2 * GIB
#: measured dense bf16 GEMM ceiling of an H100 / H200 (TFLOP/s); the data sheet's 989 is not reached
DEFAULT_TFLOPS = 790.0
#: FLOPs of a row relative to a forward row: forward-mode AD carries a tangent through every
#: matmul (primal + tangent ~ 3x); a VJP step recomputes the forward and runs the backward (~3x)
FLOPS_PER_FORWARD = {"forward_row": 1.0, "jvp_row": 3.0, "vjp_row": 3.0}
#: forward-FLOPs per second of a row, as a fraction of the GEMM ceiling. Calibrated on an H200
#: (SD3.5 Medium, 1024 px, bf16, issue 14): a forward row 0.03 s = 11.25 TFLOP -> 0.47 of 790
#: TFLOP/s; a JVP row 0.4 s (fp32 math attention) -> 0.036. The VJP row is assumed to run its
#: 3x FLOPs at the forward's efficiency (0.47 / 3), not measured.
EFFICIENCY = {"forward_row": 0.47, "jvp_row": 0.036, "vjp_row": 0.157}
_DTYPE_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4, "fp64": 8, "float64": 8}


class PlanError(ValueError):
    """A study whose plan does not fit the device (the message names the estimator and a flag)."""


# ---- the plan ---------------------------------------------------------------------------------


@dataclass
class EstimatorCost:
    name: str
    flag: str  # the flag that controls it
    rows: int  # rows per image
    rows_at_once: int  # rows per transformer call
    kind: str  # forward_row | jvp_row | vjp_row (FLOPs and speed)
    memory: str = ""  # the memory model's estimator (default: kind)
    flops: float = 0.0  # per image
    seconds: float = 0.0  # per image
    peak_bytes: float = 0.0  # weights + reserve + activations of one call


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
    estimators: list[EstimatorCost] = field(default_factory=list)

    @property
    def peak_bytes(self) -> float:
        return max(e.peak_bytes for e in self.estimators)

    @property
    def seconds_per_image(self) -> float:
        return sum(e.seconds for e in self.estimators)


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
) -> Plan:
    """The cost of a study with these options (see the module docstring for the accounting)."""
    from largemodel.study.ode import nfe_per_map

    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"--dtype must be one of {sorted(_DTYPE_BYTES)} for a plan, got {dtype!r}")
    mm = memory_model if memory_model is not None else load_memory_model()
    nfe = nfe_per_map(solver, steps)
    tokens = arch.image_tokens(resolution) + arch.text_tokens
    fwd = float(arch.forward_flops(resolution))
    weights = float(arch.parameters * _DTYPE_BYTES[dtype])
    dscale = _DTYPE_BYTES[dtype] / 2  # the memory model was measured in bf16
    plan = Plan(arch, resolution, steps, solver, dtype, device_bytes, tflops, weights)
    b = images_per_batch
    ests: list[EstimatorCost] = []
    if log_lambda == "hutchinson":
        ests.append(EstimatorCost("inversion + hutchinson", "--probes/--images-per-batch", probes * nfe, probes * b, "jvp_row"))
    elif log_lambda == "exact":
        n = 16 * (resolution // arch.vae_factor) ** 2
        ests.append(EstimatorCost("inversion + exact trace", "--log-lambda", n * nfe, min(n, 64) * b, "jvp_row"))
    else:
        ests.append(EstimatorCost("inversion", "--images-per-batch", nfe, b, "forward_row"))
    fd_rows = 2 * jvp_directions if lambda_method == "fd" else 0
    krows = 1 + perturbations + fd_rows
    ests.append(EstimatorCost("regenerations (K-batch" + (" + fd lambda)" if fd_rows else ")"), "--batch-size",
                krows * nfe, min(batch_size, krows * b), "forward_row", "k_batch"))
    if jvp_directions > 0 and lambda_method == "jvp":
        ests.append(EstimatorCost("lambda by JVP", "--batch-size", jvp_directions * nfe, min(batch_size, jvp_directions * b), "jvp_row"))
    if power_iters > 0:
        ests.append(EstimatorCost("power iteration (JVP)", "--images-per-batch", power_iters * nfe, b, "jvp_row"))
        ests.append(EstimatorCost("power iteration (VJP)", "--images-per-batch", power_iters * nfe + nfe, b, "vjp_row"))
    for e in ests:
        e.flops = e.rows * fwd * FLOPS_PER_FORWARD[e.kind]
        e.seconds = e.rows * fwd / (tflops * 1e12 * EFFICIENCY[e.kind])
        mem = e.memory or e.kind
        if mem == "k_batch" and e.rows_at_once == 1:
            mem = "forward_row"
        e.peak_bytes = weights + RUNTIME_RESERVE + e.rows_at_once * dscale * activation_bytes(mm, mem, arch, tokens)
    plan.estimators = ests
    return plan


def format_plan(plan: Plan) -> str:
    """The plan as a table (one line per estimator)."""
    a = plan.arch
    dev = f"{plan.device_bytes / 1e9:.0f} GB" if plan.device_bytes else "unknown memory"
    lines = [
        f"plan: {a.name} ({a.parameters / 1e9:.2f} B parameters, {plan.dtype} weights {plan.weights_bytes / 1e9:.1f} GB), "
        f"{plan.resolution} px = {a.image_tokens(plan.resolution):,} image + {a.text_tokens} text tokens, "
        f"{plan.steps} {plan.solver} steps; device {dev}, {plan.tflops:.0f} TFLOP/s",
        f"  {'estimator':34s} {'rows/img':>9s} {'rows/call':>9s} {'PFLOP/img':>10s} {'s/img':>8s} {'peak GB':>8s}",
    ]
    for e in plan.estimators:
        fits = "" if plan.device_bytes is None or e.peak_bytes <= plan.device_bytes else "  DOES NOT FIT"
        lines.append(f"  {e.name:34s} {e.rows:9,d} {e.rows_at_once:9d} {e.flops / 1e15:10.1f} {e.seconds:8.0f} "
                     f"{e.peak_bytes / 1e9:8.1f}{fits}")
    lines.append(f"  total per image: {plan.seconds_per_image / 60:.1f} min; peak {plan.peak_bytes / 1e9:.1f} GB")
    if plan.device_bytes is not None:
        try:
            check_fits(plan)
            lines.append(f"  fits on {plan.device_bytes / 1e9:.0f} GB")
        except PlanError as exc:
            lines.append(f"  does not fit: {exc}")
    return "\n".join(lines)


def check_fits(plan: Plan) -> None:
    """Raise ``PlanError`` (one line) if an estimator's peak exceeds the device's memory."""
    if plan.device_bytes is None:
        return
    over = [e for e in plan.estimators if e.peak_bytes > plan.device_bytes]
    if not over:
        return
    e = max(over, key=lambda x: x.peak_bytes)
    base = plan.weights_bytes + RUNTIME_RESERVE
    per_row = (e.peak_bytes - base) / max(e.rows_at_once, 1)
    fit_rows = int((plan.device_bytes - base) // per_row) if per_row > 0 else 0
    if base >= plan.device_bytes:
        hint = "the weights alone do not fit: use a GPU with more memory"
    elif fit_rows >= 1 and e.flag in ("--batch-size", "--images-per-batch"):
        hint = f"{e.flag} {fit_rows} fits" + (" (or --lambda-method fd)" if e.name == "lambda by JVP" else "")
    elif e.kind == "vjp_row":
        hint = "--power-iters 0 fits"
    else:
        hint = "no batch setting fits: drop this estimator"
    raise PlanError(f"{e.name} needs {e.peak_bytes / 1e9:.1f} GB with {e.rows_at_once} rows per call on a "
                    f"{plan.device_bytes / 1e9:.0f} GB device; {hint}")

# ---- the study CLI's use --------------------------------------------------------------------


def device_memory(device: str | None) -> float | None:
    """Total memory of a CUDA device in bytes (``None`` on the CPU or without CUDA)."""
    import torch

    if not torch.cuda.is_available() or (device is not None and not str(device).startswith("cuda")):
        return None
    return float(torch.cuda.get_device_properties(torch.device(device or "cuda")).total_memory)


def _arch_and_resolution(model: str | Path, resolution: int | None) -> tuple[PlanArch, int]:
    """The architecture of a model folder (or a ``KNOWN_MODELS`` name) and the study's resolution."""
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


def study_plan(model: str | Path, cfg: Any, *, resolution: int | None, dtype: str, device_bytes: float | None,
               lambda_method: str) -> Plan:
    """The plan of ``pfode largemodel study`` with config ``cfg`` (a ``StudyConfig``)."""
    arch, res = _arch_and_resolution(model, resolution)
    method = lambda_method if lambda_method != "auto" else "fd"
    return make_plan(
        arch, resolution=res, steps=cfg.steps, solver=cfg.solver, dtype="bf16" if dtype == "auto" else dtype,
        perturbations=cfg.perturbations, jvp_directions=cfg.jvp_directions, lambda_method=method,
        power_iters=cfg.power_iters, log_lambda=cfg.log_lambda, probes=cfg.probes, batch_size=cfg.batch_size,
        images_per_batch=cfg.images_per_batch, device_bytes=device_bytes,
    )


def check_before_run(model: str | Path, cfg: Any, *, resolution: int | None, dtype: str, device: str | None) -> None:
    """Refuse, before any weight is loaded, a study that cannot run: ``--log-lambda exact`` above
    ``EXACT_LOG_LAMBDA_MAX_DIM`` dimensions, or (on CUDA) a plan over the device's memory."""
    from largemodel.study.instability import check_exact_dim
    from largemodel.study.ode import nfe_per_map

    if cfg.log_lambda == "exact":
        from largemodel.models.folder import inspect_folder

        if str(model) in KNOWN_MODELS and not Path(model).exists():
            n = 16 * (int(resolution or 1024) // 8) ** 2
        else:
            info = inspect_folder(model)
            tc = info.transformer_config
            channels = int(tc["in_channels"]) // (4 if info.family == "flux" else 1)
            factor = 8 if info.has_vae else 1
            res = int(resolution) if resolution is not None else int(info.meta.get("resolution", int(tc.get("sample_size", 128)) * factor))
            n = channels * (res // factor) ** 2
        check_exact_dim(n, evaluations=nfe_per_map(cfg.solver, cfg.steps))
    dev_bytes = device_memory(device)
    if dev_bytes is not None:
        check_fits(study_plan(model, cfg, resolution=resolution, dtype=dtype, device_bytes=dev_bytes,
                              lambda_method=cfg.lambda_method))


def check_resolution_fits(model: str | Path, resolution: int | None, *, dtype: str, device: str | None,
                          flag: str = "--resolution") -> None:
    """Refuse, before any weight is loaded, a resolution at which a single row of the heaviest
    per-row estimator (a JVP row under the math attention kernel: ``rank``'s and ``explain``'s
    one-pass scores) does not fit the device: weights + runtime reserve + one row's activation
    peak (``activation_bytes``) over the memory of ``device`` (a CUDA device's total memory, the
    host's available memory on the CPU). The message gives the estimate.

    Raises:
        PlanError: naming ``flag``, the resolution, the estimate and the memory.
    """
    from largemodel.models.weights import available_memory

    import torch

    arch, res = _arch_and_resolution(model, resolution)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "bf16" if dtype == "auto" and dev.type == "cuda" else ("fp32" if dtype == "auto" else dtype)
    if name not in _DTYPE_BYTES:
        return  # an unknown dtype is refused by the loader, with its own message
    tokens = arch.image_tokens(res) + arch.text_tokens
    row = activation_bytes(load_memory_model(), "jvp_row", arch, tokens) * _DTYPE_BYTES[name] / 2
    need = arch.parameters * _DTYPE_BYTES[name] + RUNTIME_RESERVE + row
    have = available_memory(dev)
    if need > have:
        raise PlanError(f"{flag} {res}: one image at {res} px ({tokens:,} tokens) needs about {need / 1e9:,.1f} GB "
                        f"(plan: weights, reserve and one JVP row), more than the {have / 1e9:,.1f} GB of "
                        f"{dev.type} memory; refused before loading")


#: most network evaluations per image that ``explain``'s inverter comparison may spend (inverters x
#: sum of ``--budgets`` x the plain inversion's NFE): the defaults spend 2,800 at N = 100, budgets
#: (1, 2, 4, 8) at N = 1000 spend 60,000
EXPLAIN_MAX_EVALUATIONS = 100_000


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
    seconds = evaluations * arch.forward_flops(res) / (DEFAULT_TFLOPS * 1e12 * EFFICIENCY["forward_row"])
    priced = f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds:,.2g} s"
    raise PlanError(f"--budgets {','.join(str(b) for b in budgets)}: the inverter comparison would spend "
                    f"{evaluations:,} network evaluations per image ({inverters} inverters x {sum(budgets):,} x "
                    f"{nfe_per_map(solver, steps)}), over the limit of {EXPLAIN_MAX_EVALUATIONS:,} (plan: {priced} "
                    f"per image on a {DEFAULT_TFLOPS:.0f} TFLOP/s GPU); refused before loading")
