r"""Guidance as a study axis: per image, how error, mu_bar and log Lambda change with ``W`` and the prompt.

``run_guidance_axis`` measures each image once per condition ``(mode, W)``: ``mode`` is ``"empty"``
(the null prompt) or ``"caption"`` (the image's own prompt), ``W`` each scale of
``--guidance-scales``, on the guided field ``u_W = u_u + W (u_c - u_u)`` (docs/theory.md §10.7). One
run per condition, each in its own sub-folder ``<mode>_w<W>`` with its records keyed on the prompt
and ``W`` (so a rerun resumes each), by the caller's ``measure`` (``explain`` or ``study``). Then
``guidance.csv`` (one row per image and condition), ``guidance.json`` (``guidance_effects``) and the
figure ``guidance.png`` (``guidance_figure``).

``guidance_effects`` states, per mode and metric, the median over images at each ``W`` with its
bootstrap interval, and the paired per-image difference ``d_i = m_i(W) - m_i(W_ref)`` against the
smallest scale ``W_ref``, and (with both modes) ``m_i(caption) - m_i(empty)`` at each ``W``: the
median of ``d`` with its bootstrap interval and the sign test, the fraction ``q`` of the untied
images whose metric rises, decided by ``simulate.decide.decide_proportion`` at the level 1/2
(docs/theory.md §10.9): ``"increases"`` when its Clopper-Pearson interval lies above 1/2,
``"decreases"`` below, ``"undetermined"`` when it straddles 1/2, ``"unchanged"`` when every
difference is a tie (within ``TIE_RTOL`` of its values: float32 rounding). On the null prompt
``u_W = u_u`` for every ``W``, so there ``W`` can change nothing: the mode ``"empty"`` is the axis's
own negative control.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from largemodel.models.conditioning import check_guidance_scale

__all__ = ["METRICS", "MODES", "axis_items", "check_axis_flags", "guidance_effects", "guidance_figure", "guidance_lines", "paired_change",
           "parse_guidance_scales", "run_guidance_axis", "axis_modes"]

#: the metrics followed along the axis (record fields): reconstruction error, mu_bar, one-pass log Lambda
METRICS = ("mse_latent", "mu_bar", "log_Lambda")

#: the prompt modes: the null prompt, and the image's own caption
MODES = ("empty", "caption")

Measure = Callable[[Any, Sequence[Any], Path], list[dict[str, Any]]]


def parse_guidance_scales(text: str | None, flag: str = "--guidance-scales") -> tuple[float, ...] | None:
    """``"1,3.5,7"`` as distinct scales ``W >= 1`` in increasing order (``None`` stays ``None``).

    Raises:
        ValueError: naming ``flag``: an empty list, a value that is not a number ``>= 1``, a repeat.
    """
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"{flag} needs at least two comma-separated scales, e.g. 1,3.5,7; got {text!r}")
    values = []
    for p in parts:
        try:
            values.append(check_guidance_scale(float(p), flag))
        except ValueError:
            raise ValueError(f"{flag}: {p!r} is not a finite number >= 1 (1 = no guidance)") from None
    if len(set(values)) != len(values):
        raise ValueError(f"{flag}: repeated scale in {text!r}")
    return tuple(sorted(values))


def check_axis_flags(args: Any) -> tuple[float, ...] | None:
    """``--guidance-scales`` parsed, after refusing it together with ``--guidance-scale`` (one scale, or an axis)."""
    scales = parse_guidance_scales(getattr(args, "guidance_scales", None))
    if scales is not None and getattr(args, "guidance_scale_given", False):
        raise ValueError("--guidance-scales and --guidance-scale exclude each other: give one scale, or the axis")
    return scales


def axis_modes(args: Any) -> int:
    """How many prompt modes an axis run has (:func:`axis_items`' ``modes``, for its plan before any image is
    read): both with ``--prompt`` or ``--captions``, only ``"empty"`` without."""
    given = getattr(args, "prompt", None) is not None or getattr(args, "captions", None) is not None
    return len(MODES) if given else 1


def axis_items(items: Sequence[Any], prompt: str | None) -> tuple[list[Any], tuple[str, ...]]:
    """The items and modes of an axis run: with ``--prompt`` every item's caption is that prompt, with
    ``--captions`` each keeps its own; with neither only the ``"empty"`` mode is run."""
    if prompt is not None:
        return [replace(it, prompt=prompt) for it in items], MODES
    return list(items), (MODES if all(it.prompt is not None for it in items) else ("empty",))


def _tag(mode: str, w: float) -> str:
    return f"{mode}_w{w:g}"


def run_guidance_axis(model: Any, items: Sequence[Any], out: Path, scales: Sequence[float], measure: Measure, *,
                      modes: Sequence[str] = MODES, seed: int = 0, n_boot: int = 2000,
                      mode_scales: dict[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """Measure ``items`` under every ``(mode, W)``; write ``guidance.csv``, ``guidance.json``, ``guidance.png``.

    Args:
        model: a loaded ``FlowModel`` holding the captions' embeddings (``model.conditioned(p, W)``).
        items: ``ImageItem`` s; under ``"caption"`` each keeps its ``prompt``, under ``"empty"`` it gets ``""``.
        out: the output folder (one sub-folder per condition).
        scales: the ``W`` values (``parse_guidance_scales``).
        measure: ``measure(model, items, folder) -> records`` (each with ``name`` and the ``METRICS``
            it measured), one run of ``explain`` or ``study``.
        modes: the prompt modes (``"caption"`` needs every item's ``prompt``).
        mode_scales: a mode's own scales where it needs fewer (a subset of ``scales`` holding the smallest and
            the largest, so that its change from ``W_ref`` to the largest ``W`` is measured); ``None``: every mode
            at every scale.

    Returns:
        ``guidance_effects`` of the rows, with ``figure`` and ``csv`` paths.
    """
    from theory.output.files import write_text

    out = Path(out)
    if "caption" in modes and any(it.prompt is None for it in items):
        raise ValueError("the caption mode needs a prompt per image (--captions or --prompt)")
    own = dict(mode_scales or {})
    for mode, ws in own.items():
        if mode not in modes or not set(ws) <= set(scales) or min(scales) not in ws or max(scales) not in ws:
            raise ValueError(f"mode_scales[{mode!r}] must be scales of {list(scales)} holding {min(scales):g} and "
                             f"{max(scales):g}, got {list(ws)}")
    rows: list[dict[str, Any]] = []
    for mode in modes:
        group = [replace(it, prompt="") for it in items] if mode == "empty" else list(items)
        for w in sorted(own.get(mode, scales)):
            records = measure(model.conditioned("", w), group, out / _tag(mode, w))
            prompt_of = {it.key: it.prompt for it in group}
            rows += [{"name": r["name"], "prompt": prompt_of.get(r["name"], ""), "mode": mode, "guidance_scale": w,
                      **{m: float(r[m]) for m in METRICS if r.get(m) not in (None, "")}} for r in records if "skipped" not in r]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["name", "prompt", "mode", "guidance_scale", *METRICS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "guidance.csv", buf.getvalue())
    effects = guidance_effects(rows, scales, seed=seed, n_boot=n_boot)
    effects["figure"] = str(guidance_figure(rows, effects, out / "guidance.png"))
    effects["csv"] = str(out / "guidance.csv")
    write_text(out / "guidance.json", json.dumps(effects, indent=1, default=float))
    return effects


def _median_ci(x: np.ndarray, seed: int, n_boot: int) -> tuple[float, float]:
    """Bootstrap interval of the median (``largemodel.study.stats.bootstrap_ci``, percentile)."""
    from largemodel.study.stats import bootstrap_ci

    if x.size < 2 or np.all(x == x[0]):
        return (float(np.median(x)), float(np.median(x))) if x.size else (math.nan, math.nan)
    (lo, hi), _ = bootstrap_ci(x, x, lambda a, b, axis=-1: np.median(a, axis=axis), n_boot=n_boot, seed=seed,
                               confidence=0.95, method="percentile")
    return lo, hi


#: a paired difference within this relative size of its values (or of the median value, for values near 0)
#: is a tie: float32 rounding, amplified along the ODE (measured up to 1.3e-5 relative; on the null prompt ``u_W = u_u`` exactly, and ``W > 1`` differs from
#: ``W = 1`` only by the rounding of a batch of 2B rows)
TIE_RTOL = 1e-4


def paired_change(after: Sequence[float], before: Sequence[float], *, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """The paired differences ``d_i = after_i - before_i``: median with bootstrap interval, and the sign
    test's decision (``simulate.decide.decide_proportion`` on ``#{d_i > 0}`` of the untied, level 1/2;
    ``|d_i| <= TIE_RTOL max(|after_i|, |before_i|, median_j |before_j|)`` is a tie; module docstring)."""
    from simulate.decide import decide_proportion

    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    arr = a[ok] - b[ok]
    floor = float(np.median(np.abs(b[ok]))) if ok.any() else 0.0
    tol = TIE_RTOL * np.maximum(np.maximum(np.abs(a[ok]), np.abs(b[ok])), floor)
    up, down = int((arr > tol).sum()), int((arr < -tol).sum())
    res: dict[str, Any] = {"n": int(arr.size), "median": float(np.median(arr)) if arr.size else math.nan,
                           "median_ci": _median_ci(arr, seed, n_boot), "up": up, "down": down, "ties": int(arr.size - up - down)}
    if up + down == 0:
        res.update(status="unchanged" if arr.size else "undetermined", frac_up=math.nan, frac_up_ci=(math.nan, math.nan))
        return res
    dec = decide_proportion(up, up + down, 0.5)  # q = share rising: "holds" = q below 1/2, "fails" = above
    res.update(frac_up=dec.estimate, frac_up_ci=(dec.lower, dec.upper),
               status={"holds": "decreases", "fails": "increases", "undetermined": "undetermined"}[dec.status])
    return res


def guidance_effects(rows: Sequence[dict[str, Any]], scales: Sequence[float], *, seed: int = 0,
                     n_boot: int = 2000) -> dict[str, Any]:
    """Medians per ``(mode, W)`` and paired changes vs ``W_ref = min(scales)`` and caption vs empty (module docstring)."""
    by = {(r["mode"], r["guidance_scale"], r["name"]): r for r in rows}
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    ref = min(scales)
    out: dict[str, Any] = {"scales": list(scales), "reference_scale": ref, "modes": modes, "medians": {}, "vs_reference": {},
                           "caption_vs_empty": {}}
    names = sorted({r["name"] for r in rows})
    for metric in METRICS:
        for mode in modes:
            for w in scales:
                vals = np.asarray([by[(mode, w, n)][metric] for n in names if metric in by.get((mode, w, n), {})])
                if vals.size:
                    out["medians"][f"{metric}|{mode}|{w:g}"] = {"median": float(np.median(vals)),
                                                                "ci": _median_ci(vals, seed, n_boot), "n": int(vals.size)}
                if w == ref or not vals.size:
                    continue
                both = [n for n in names if metric in by.get((mode, w, n), {}) and metric in by.get((mode, ref, n), {})]
                out["vs_reference"][f"{metric}|{mode}|{w:g}"] = paired_change(
                    [by[(mode, w, n)][metric] for n in both], [by[(mode, ref, n)][metric] for n in both], seed=seed, n_boot=n_boot)
        if len(modes) == 2:
            for w in scales:
                both = [n for n in names if metric in by.get(("caption", w, n), {}) and metric in by.get(("empty", w, n), {})]
                if both:
                    out["caption_vs_empty"][f"{metric}|{w:g}"] = paired_change(
                        [by[("caption", w, n)][metric] for n in both], [by[("empty", w, n)][metric] for n in both],
                        seed=seed, n_boot=n_boot)
    return out


def guidance_lines(effects: dict[str, Any]) -> list[str]:
    """One line per paired change: metric, mode, W, status, median difference [CI], share rising [CI]."""
    lines = []
    for table, label in (("vs_reference", f"vs W={effects['reference_scale']:g}"), ("caption_vs_empty", "caption - empty")):
        for key, c in effects[table].items():
            lo, hi = c["median_ci"]
            share = "" if not math.isfinite(c["frac_up"]) else (
                f"; rises on {c['up']}/{c['up'] + c['down']} [{c['frac_up_ci'][0]:.2f}, {c['frac_up_ci'][1]:.2f}]")
            lines.append(f"{key.replace('|', ' ')} ({label}): {c['status']}, median diff {c['median']:.3g} "
                         f"[{lo:.3g}, {hi:.3g}]{share}")
    return lines


def guidance_figure(rows: Sequence[dict[str, Any]], effects: dict[str, Any], out_png: Path, dpi: int = 110) -> Path:
    """Per-image lines of each metric against ``W`` (thin; empty prompt grey, caption blue) with the
    medians and their bootstrap intervals (thick, error bars); one panel per metric."""
    from largemodel.study.plots import _new_figure, _save

    metrics = [m for m in METRICS if any(m in r for r in rows)]
    fig = _new_figure((3.6 * max(1, len(metrics)), 3.2))
    colours = {"empty": "0.45", "caption": "tab:blue"}
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for mode in effects["modes"]:
            for name in sorted({r["name"] for r in rows}):
                pts = sorted((r["guidance_scale"], r[metric]) for r in rows
                             if r["mode"] == mode and r["name"] == name and metric in r)
                if pts:
                    ax.plot(*zip(*pts), color=colours[mode], alpha=0.18, lw=0.7)
            med = [(w, effects["medians"][f"{metric}|{mode}|{w:g}"]) for w in effects["scales"]
                   if f"{metric}|{mode}|{w:g}" in effects["medians"]]
            if med:
                ws = [w for w, _ in med]
                mid = np.array([m["median"] for _, m in med])
                err = np.abs(np.array([m["ci"] for _, m in med]).T - mid)
                ax.errorbar(ws, mid, yerr=err, color=colours[mode], lw=2, capsize=3, marker="o", ms=4,
                            label=f"{mode} prompt (median, 95% CI)")
        if metric in ("mse_latent", "mu_bar") and all(r[metric] > 0 for r in rows if metric in r):
            ax.set_yscale("log")
        ax.set_xlabel("guidance scale W")
        ax.set_title({"mse_latent": "reconstruction error (MSE)", "mu_bar": "mu_bar", "log_Lambda": "log Lambda"}[metric],
                     fontsize=9)
        if i == 0:
            ax.legend(fontsize=7)
    return _save(fig, out_png, dpi)
