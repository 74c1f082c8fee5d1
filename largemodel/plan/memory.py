r"""The plan's memory model: per-row activation peaks of each estimator, measured and scaled.

``memory_model.json`` holds the fit ``a + b T + c T^2`` in the joint token count ``T`` of the
peak resident bytes of one step of each estimator, measured on the CPU with the full-size SD3.5
Medium transformer (``benchmarks/measure_memory_model.py``, which calls ``fit_memory_model``);
``activation_bytes`` scales it to another architecture (see ``largemodel.plan.cost``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from largemodel.plan.arch import PlanArch, arch_from_config
from largemodel.models.transformer_configs import CONFIG_DIR, load_config

__all__ = ["MEMORY_MODEL", "activation_bytes", "fit_memory_model", "load_memory_model"]

MEMORY_MODEL = Path(__file__).with_name("memory_model.json")


def fit_memory_model(
    measurements: Sequence[dict[str, Any]], *, fit_latents: Sequence[int], check_latents: Sequence[int]
) -> dict[str, Any]:
    """Fit the per-row activation peak of each estimator in the joint token count ``T`` on
    ``fit_latents``; check the prediction at each of ``check_latents`` (held out, larger).

    ``a + b T + c T^2`` for every estimator (attention's ``L x L`` scores under the math kernel,
    smaller quadratic terms elsewhere), ``T`` = image tokens + ``SD3_TEXT_TOKENS``. Relative
    least squares (each point weighted by its inverse), so small and large peaks count alike.
    """
    ref = arch_from_config(load_config(CONFIG_DIR / "sd35_medium_transformer.json"), name="sd3.5-medium")
    out: dict[str, Any] = {
        "reference": {"model": "sd3.5-medium (random weights, bf16)", "width": ref.width, "heads": ref.heads,
                      "blocks": ref.blocks, "text_tokens": ref.text_tokens},
        "method": "peak resident bytes (VmHWM after clear_refs) of one step, fresh process per resolution, "
                  "CPU, 1 thread, MALLOC_MMAP_THRESHOLD_=65536 (benchmarks/measure_memory_model.py)",
        "estimators": {},
        "measurements": list(measurements),
    }
    for est in sorted({m["estimator"] for m in measurements}):
        pts = [m for m in measurements if m["estimator"] == est]
        fit = [m for m in pts if m["latent"] in fit_latents]
        if len(fit) < 3:
            continue
        tok = np.array([m["image_tokens"] + ref.text_tokens for m in fit], dtype=float)
        y = np.array([m["peak_bytes"] / m["rows"] for m in fit], dtype=float)
        coef, *_ = np.linalg.lstsq(np.stack([np.ones_like(tok), tok, tok**2], 1) / y[:, None], np.ones_like(y), rcond=None)
        a, b, c = (float(v) for v in coef)
        entry: dict[str, Any] = {"a": a, "b": b, "c": c, "form": "a + b T + c T^2",
                                 "fit_tokens": tok.astype(int).tolist(), "fit_bytes_per_row": y.tolist(), "checks": []}
        for m in sorted((m for m in pts if m["latent"] in check_latents), key=lambda m: m["latent"]):
            t_chk = m["image_tokens"] + ref.text_tokens
            pred = a + b * t_chk + c * t_chk**2
            meas = m["peak_bytes"] / m["rows"]
            entry["checks"].append({"tokens": int(t_chk), "predicted_bytes": pred, "measured_bytes": float(meas),
                                    "relative_error": (pred - meas) / meas})
        out["estimators"][est] = entry
    return out


def load_memory_model(path: str | Path = MEMORY_MODEL) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def activation_bytes(model: dict[str, Any], estimator: str, arch: PlanArch, tokens: int, *, terms: str = "all") -> float:
    """Per-row activation peak of ``estimator`` on ``arch`` at ``tokens`` joint tokens (bytes).

    The measured fit on the reference (SD3.5 Medium) scaled to ``arch``: ``b`` by the width
    ratio, ``c`` by the heads ratio, and for ``vjp_row`` both by the blocks ratio. ``terms``:
    ``"all"``, ``"linear"`` (``a + b T``) or ``"quadratic"`` (``c T^2``, attention's score
    matrices: absent on the fused kernels, fp32 on the math kernel whatever the model's dtype).
    """
    e = model["estimators"][estimator]
    ref = model["reference"]
    depth = arch.blocks / ref["blocks"] if estimator == "vjp_row" else 1.0
    a = e["a"]
    b = e["b"] * arch.width / ref["width"] * depth
    c = e["c"] * arch.heads / ref["heads"] * depth
    if terms not in ("all", "linear", "quadratic"):
        raise ValueError(f"terms must be all, linear or quadratic, got {terms!r}")
    lin, quad = a + b * tokens, c * tokens * tokens
    return max({"all": lin + quad, "linear": lin, "quadratic": quad}[terms], 0.0)
