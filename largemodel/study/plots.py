"""Figures of the large-model reconstruction study (Fig. 4c, Fig. A1 and App. F of the paper).

* :func:`scatter_instability`: reconstruction error against averaged instability coefficient, one
  point per image, log-log, with a fitted power law and the correlation numbers with intervals.
* :func:`multi_scatter`: the same for several models side by side (SD3.5 Medium, SD3.5 Large,
  FLUX in Fig. A1).
* :func:`failure_gallery`: original, reconstruction and amplified absolute difference, one row per
  image, titled with its numbers (App. F).

Figures are drawn on the Agg canvas directly (no ``pyplot``, no global backend switch), so these
functions are safe to call from scripts, tests and threads. Each returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats as sps

from largemodel.models.images import to_uint8
from largemodel.study.stats import linear_fit_loglog
from theory.figures import readable_log_ticks

Record = Mapping[str, Any]


def scatter_instability(
    records: Sequence[Record],
    x_key: str,
    y_key: str,
    out_png: str | Path,
    *,
    title: str,
    logx: bool = True,
    logy: bool = True,
    stats: Mapping[str, Any] | None = None,
    hue_key: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    fit: bool = True,
    dpi: int = 150,
) -> Path:
    """Scatter of one number per image against another, Fig. 4c style.

    Args:
        records: one mapping per image, holding at least ``x_key`` and ``y_key``.
        x_key: key of the x value (e.g. the averaged instability coefficient).
        y_key: key of the y value (e.g. the reconstruction error).
        out_png: file to write (parent folders are created).
        title: panel title.
        logx: logarithmic x axis (non-positive x values are left out and counted in the legend).
        logy: logarithmic y axis (likewise).
        stats: a :func:`largemodel.study.stats.correlate` result; its Spearman and Pearson numbers and
            intervals go into the legend. ``None``: no correlation numbers.
        hue_key: colour points by this key: a colour bar for numbers, a legend for anything else.
        xlabel: x axis label (default ``x_key``).
        ylabel: y axis label (default ``y_key``).
        fit: draw a least-squares line in the plotted coordinates (a power law in log-log, with
            its slope and t-interval in the legend).
        dpi: resolution of the PNG.

    Returns:
        ``out_png`` as a ``Path``.

    Raises:
        ValueError: if ``records`` is empty or a record lacks a key.
    """
    fig = _new_figure((6.0, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    _draw_scatter(fig, ax, records, x_key, y_key, title=title, logx=logx, logy=logy, stats=stats, hue_key=hue_key,
                  xlabel=xlabel, ylabel=ylabel, fit=fit)
    return _save(fig, out_png, dpi)


def multi_scatter(panels: Sequence[Mapping[str, Any]], out_png: str | Path, *, suptitle: str | None = None,
                  dpi: int = 150) -> Path:
    """Several :func:`scatter_instability` panels side by side (Fig. A1: one per model).

    Args:
        panels: one mapping per panel with keys ``records``, ``x_key``, ``y_key``, ``title`` and
            optionally ``stats``, ``logx``, ``logy``, ``hue_key``, ``xlabel``, ``ylabel``, ``fit``
            (same meaning and defaults as in :func:`scatter_instability`).
        out_png: file to write.
        suptitle: title over all panels.
        dpi: resolution of the PNG.

    Returns:
        ``out_png`` as a ``Path``.

    Raises:
        ValueError: if ``panels`` is empty or a panel lacks a required key.
    """
    if not panels:
        raise ValueError("multi_scatter needs at least one panel")
    fig = _new_figure((5.2 * len(panels), 4.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    optional = ("stats", "logx", "logy", "hue_key", "xlabel", "ylabel", "fit")
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        missing = [k for k in ("records", "x_key", "y_key", "title") if k not in panel]
        if missing:
            raise ValueError(f"panel {i} lacks {', '.join(missing)}")
        _draw_scatter(fig, ax, panel["records"], panel["x_key"], panel["y_key"], title=panel["title"],
                      **{k: panel[k] for k in optional if k in panel})
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, out_png, dpi)


def failure_gallery(
    items: Sequence[Mapping[str, Any]],
    out_png: str | Path,
    *,
    n_cols: int = 3,
    diff_vmax: float | None = None,
    title: str | None = None,
    dpi: int = 150,
) -> Path:
    """Grid of originals, reconstructions and absolute differences, one row per image (App. F).

    The difference is ``|original - reconstruction|`` averaged over channels and measured on the
    ``[0, 1]`` pixel scale. It is shown as a heat map whose colour scale, shared by all rows, runs
    from 0 to ``diff_vmax``, i.e. amplified by ``1 / diff_vmax``; every row has a colour bar and the
    gain is stated in the figure title.

    Args:
        items: one mapping per row with ``name`` (str), ``original`` and ``reconstruction``
            (``(C, H, W)`` tensors in ``[-1, 1]``, C in {1, 3}, same shape) and optionally
            ``numbers``: label -> value, printed in the row title (a label containing "psnr" is
            printed in dB).
        out_png: file to write.
        n_cols: 3 (original, reconstruction, difference) or 2 (no difference panel).
        diff_vmax: top of the difference colour scale; default the largest difference shown.
        title: figure title (the gain is appended).
        dpi: resolution of the PNG.

    Returns:
        ``out_png`` as a ``Path``.

    Raises:
        ValueError: if ``items`` is empty, ``n_cols`` is not 2 or 3, or an item is malformed.
    """
    if not items:
        raise ValueError("failure_gallery needs at least one item")
    if n_cols not in (2, 3):
        raise ValueError(f"n_cols must be 2 or 3, got {n_cols}")
    pairs = [_gallery_pair(i, item) for i, item in enumerate(items)]
    diffs = [(o - r).abs().mean(dim=0).numpy() / 2.0 for o, r in pairs]
    vmax = float(diff_vmax) if diff_vmax is not None else max(max(float(d.max()) for d in diffs), 1e-6)
    if vmax <= 0:
        raise ValueError(f"diff_vmax must be positive, got {diff_vmax}")
    fig = _new_figure((3.2 * n_cols + (0.6 if n_cols == 3 else 0.0), 3.5 * len(items)))
    rows = fig.subfigures(len(items), 1, squeeze=False)[:, 0]
    for row, item, (orig, recon), diff in zip(rows, items, pairs, diffs):
        axes = row.subplots(1, n_cols)
        _show_image(axes[0], orig, "original")
        _show_image(axes[1], recon, "reconstruction")
        if n_cols == 3:
            im = axes[2].imshow(diff, cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
            axes[2].set_title("|difference|")
            axes[2].set_axis_off()
            row.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
        row.suptitle(_row_title(str(item["name"]), item.get("numbers") or {}), fontsize="medium")
    gain = f"difference scale 0 to {vmax:.3g} of the pixel range (gain x{1.0 / vmax:.3g})"
    if title or n_cols == 3:
        fig.suptitle("\n".join(t for t in (title, gain if n_cols == 3 else None) if t), fontsize="large")
    return _save(fig, out_png, dpi)


# ---------------------------------------------------------------------------------------------
# scatter helpers
# ---------------------------------------------------------------------------------------------


def _draw_scatter(
    fig: Figure,
    ax: Axes,
    records: Sequence[Record],
    x_key: str,
    y_key: str,
    *,
    title: str,
    logx: bool = True,
    logy: bool = True,
    stats: Mapping[str, Any] | None = None,
    hue_key: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    fit: bool = True,
) -> None:
    """Draw one scatter panel on ``ax`` (see :func:`scatter_instability`)."""
    if not records:
        raise ValueError(f"no records to plot for {title!r}")
    x = _column(records, x_key)
    y = _column(records, y_key)
    keep = np.isfinite(x) & np.isfinite(y) & ((x > 0) | (not logx)) & ((y > 0) | (not logy))
    extra: list[Line2D] = []
    _scatter_points(fig, ax, records, x, y, keep, hue_key)
    if fit:
        _fit_line(ax, x[keep], y[keep], logx, logy)
    if stats is not None:
        extra += [_text_handle(line) for line in _stats_lines(stats)]
    if (dropped := int((~keep).sum())) > 0:
        extra.append(_text_handle(f"{dropped} point(s) not shown (non-finite or non-positive)"))
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    for axis, log in ((ax.xaxis, logx), (ax.yaxis, logy)):
        if log:
            readable_log_ticks(axis)
    ax.set_xlabel(xlabel or x_key)
    ax.set_ylabel(ylabel or y_key)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles or extra:
        ax.legend(handles=handles + extra, fontsize="small", loc="best", framealpha=0.85)


def _column(records: Sequence[Record], key: str) -> np.ndarray:
    """``float(record[key])`` for every record (NaN where the value is ``None``)."""
    values = []
    for i, record in enumerate(records):
        if key not in record:
            raise ValueError(f"record {i} has no key {key!r}")
        values.append(np.nan if record[key] is None else float(record[key]))
    return np.asarray(values, dtype=np.float64)


def _scatter_points(fig: Figure, ax: Axes, records: Sequence[Record], x: np.ndarray, y: np.ndarray,
                    keep: np.ndarray, hue_key: str | None) -> None:
    """The points: one colour, a colour map (numeric hue) or one legend entry per category."""
    style: dict[str, Any] = {"s": 18, "alpha": 0.75, "edgecolors": "none"}
    if hue_key is None:
        ax.scatter(x[keep], y[keep], color="C0", **style)
        return
    hue = [record.get(hue_key) for record in records]
    if all(isinstance(h, Real) and not isinstance(h, bool) for h in hue):
        values = np.asarray(hue, dtype=np.float64)
        points = ax.scatter(x[keep], y[keep], c=values[keep], cmap="viridis", **style)
        fig.colorbar(points, ax=ax, label=hue_key)
        return
    labels = [str(h) for h in hue]
    for k, category in enumerate(dict.fromkeys(labels)):
        mask = keep & np.array([label == category for label in labels])
        ax.scatter(x[mask], y[mask], color=f"C{k % 10}", label=f"{hue_key}={category}", **style)


def _fit_line(ax: Axes, x: np.ndarray, y: np.ndarray, logx: bool, logy: bool) -> None:
    """Least-squares line in the plotted coordinates (labelled); nothing for fewer than 3 points or constant x."""
    if x.size < 3 or np.ptp(x) == 0.0:
        return
    grid = np.geomspace(x.min(), x.max(), 100) if logx else np.linspace(x.min(), x.max(), 100)
    if logx and logy:
        power = linear_fit_loglog(x, y)
        line = 10.0 ** (power["intercept"] + power["slope"] * np.log10(grid))
        low, high = power["slope_ci"]
        label = f"fit y ∝ x^{power['slope']:.2f} [{low:.2f}, {high:.2f}]"
    else:
        tx, ty = (np.log10(x) if logx else x), (np.log10(y) if logy else y)
        fit = sps.linregress(tx, ty)
        pred = fit.intercept + fit.slope * (np.log10(grid) if logx else grid)
        line = 10.0 ** pred if logy else pred
        unit = "".join(("per decade of x" if logx else "", " in log10 y" if logy else "")).strip()
        label = f"least-squares fit (slope {fit.slope:.3g}{' ' + unit if unit else ''})"
    ax.plot(grid, line, color="black", linewidth=1.2, linestyle="--", label=label)


def _stats_lines(stats: Mapping[str, Any]) -> list[str]:
    """Legend lines for a :func:`largemodel.study.stats.correlate` result."""
    if stats.get("reason"):
        return [f"correlation undefined: {stats['reason']}"]
    level = round(100 * float(stats.get("confidence", 0.95)))

    def one(name: str, value: float, ci: Sequence[float]) -> str:
        return f"{name} = {value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"

    return [
        one("Spearman ρ", stats["spearman_rho"], stats["spearman_ci"]) + f" (p={stats['spearman_p']:.2g})",
        one("Pearson r", stats["pearson_r"], stats["pearson_ci"]) + f" (p={stats['pearson_p']:.2g})",
        f"{level}% bootstrap CI, n = {stats['n']}",
    ]


def _text_handle(text: str) -> Line2D:
    """A legend entry that is only text."""
    return Line2D([], [], linestyle="none", marker="none", label=text)


# ---------------------------------------------------------------------------------------------
# gallery helpers
# ---------------------------------------------------------------------------------------------


def _gallery_pair(index: int, item: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated ``(original, reconstruction)`` float CPU tensors of one gallery item."""
    missing = [k for k in ("name", "original", "reconstruction") if k not in item]
    if missing:
        raise ValueError(f"gallery item {index} lacks {', '.join(missing)}")
    orig, recon = (torch.as_tensor(item[k]).detach().to("cpu", torch.float32) for k in ("original", "reconstruction"))
    if orig.ndim != 3 or orig.shape[0] not in (1, 3):
        raise ValueError(f"gallery item {item['name']!r}: original must be (C, H, W) with C in (1, 3), "
                         f"got {tuple(orig.shape)}")
    if orig.shape != recon.shape:
        raise ValueError(f"gallery item {item['name']!r}: original {tuple(orig.shape)} and reconstruction "
                         f"{tuple(recon.shape)} differ in shape")
    return orig, recon


def _show_image(ax: Axes, image: torch.Tensor, label: str) -> None:
    """Show a ``(C, H, W)`` image in ``[-1, 1]`` without axes."""
    pixels = to_uint8(image)
    if pixels.shape[-1] == 1:
        ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(pixels, interpolation="nearest")
    ax.set_title(label)
    ax.set_axis_off()


def _row_title(name: str, numbers: Mapping[str, Any]) -> str:
    """``"name: PSNR 21.30 dB, kappa 4.1e+03"``-style row title."""
    parts = []
    for label, value in numbers.items():
        if isinstance(value, Real) and not isinstance(value, bool):
            parts.append(f"{label} {float(value):.2f} dB" if "psnr" in label.lower() else f"{label} {float(value):.3g}")
        else:
            parts.append(f"{label} {value}")
    return f"{name}: {', '.join(parts)}" if parts else name


# ---------------------------------------------------------------------------------------------
# figure plumbing
# ---------------------------------------------------------------------------------------------


def _new_figure(size: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas, with constrained layout."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG (``theory.output.files.write_bytes``: parent folders created, atomic,
    recorded in the run folder's manifest, no link followed) and return the path."""
    import io

    from theory.output.files import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return write_bytes(out_png, buf.getvalue())
