r"""Per-pixel instability maps: where in the image does the regeneration amplify perturbations? (issue 15)

For an image with latent ``x``, inverted noise ``z~ = F~(x)`` and reconstruction ``x^ = G(z~)``,
the study's ``K`` perturbed regenerations ``G(z~ + D_k)`` (``||D_k|| = eps_rms sqrt(n)``, App. E) are
recomputed here with the study's seeding rule (``largemodel.study.items.image_generators``: the
generator seeded from ``StudyConfig.seed`` and the image's record key, the Hutchinson probes drawn first when ``log_lambda`` is
``"hutchinson"``, then the directions), so their ``mu_bar`` equals the study's. Decoded to pixels
(``[0, 1]`` scale, ``D(.)`` the decoder; the identity for pixel-space models):

- instability map ``S(p) = sqrt( (1/K) sum_k mean_c (D(G(z~ + D_k)) - D(G(z~)))_{c,p}^2 ) / eps_rms``,
  the per-pixel spread of the regenerations per unit RMS perturbation of the noise;
- error map ``E(p) = sqrt( mean_c (D(x^) - image)_{c,p}^2 )``, the actual reconstruction error;
- the spatial Spearman ``rho(S, E)`` over the ``R^2`` pixels: does the map point where the error is?
  Pixels the decoder clamps (saturated black or white, ``D`` clips to ``[-1, 1]``) have ``S = E = 0``
  and inflate ``rho``; ``spatial_spearman_live`` is ``rho`` over the pixels where ``S > 0`` or ``E > 0``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import stats as sps
from torch import Tensor

from theory.figures import save_png

from largemodel.study import instability as ins
from largemodel.study.ode import generate, invert
from largemodel.study.runner import ImageItem, StudyConfig, pixel_digest, record_key

__all__ = ["instability_map", "maps_figure"]


@torch.no_grad()
def instability_map(model: Any, image: Tensor, key: str, cfg: StudyConfig) -> dict[str, Any]:
    """The instability and error maps of one image ``(C, R, R)`` in ``[-1, 1]`` (module docstring);
    ``key`` is the image's record key (``record_key``), which seeds its draws as in the study.

    Returns:
        ``instability_map`` and ``error_map`` (``(R, R)`` float64 numpy arrays), ``reconstruction``
        (``(C, R, R)`` tensor), ``mu_bar`` (latent, as the study computes it), ``spatial_spearman``,
        ``spatial_spearman_live`` (unclamped pixels only) and ``live_fraction``.
    """
    from largemodel.diagnose.scores import image_generators

    if cfg.perturbations < 1:
        raise ValueError(f"--perturbations must be >= 1 for an instability map, got {cfg.perturbations}")
    gen = image_generators(cfg.seed, [key])
    vel = model.velocity
    images = image.unsqueeze(0)
    x = model.encode(images)
    sigmas = model.sigmas(cfg.steps)
    if cfg.log_lambda == "none":
        z = invert(vel, x, sigmas, solver=cfg.solver)
    else:
        z = ins.log_lambda_one_pass(vel, x, sigmas, solver=cfg.solver, probes=cfg.probes,
                                    exact=cfg.log_lambda == "exact", generator=gen)["z"]
    k, n = cfg.perturbations, x[0].numel()
    d = ins.unit_directions((k, *z.shape[1:]), gen, z)
    size = cfg.eps_rms * math.sqrt(n)
    rows = torch.cat([z, z + size * d])
    out = torch.cat([generate(vel, rows[i : i + cfg.batch_size], sigmas, solver=cfg.solver)
                     for i in range(0, rows.shape[0], cfg.batch_size)])
    xr, gp = out[:1], out[1:]
    mu_bar = float((gp - xr).flatten(1).to(torch.float64).norm(dim=1).div(size).mean())
    pix = torch.cat([model.decode(out[i : i + cfg.batch_size]) for i in range(0, out.shape[0], cfg.batch_size)])
    pix = pix.to(torch.float64).cpu() / 2.0  # [0, 1] scale differences
    spread = ((pix[1:] - pix[:1]) ** 2).mean(dim=(0, 1)).sqrt() / cfg.eps_rms
    err = ((pix[0] - images[0].to(torch.float64).cpu() / 2.0) ** 2).mean(dim=0).sqrt()
    s_map, e_map = spread.numpy(), err.numpy()
    live = (s_map > 0) | (e_map > 0)
    return {"instability_map": s_map, "error_map": e_map, "reconstruction": (pix[0] * 2.0).to(torch.float32),
            "mu_bar": mu_bar, "spatial_spearman": _spearman(s_map.ravel(), e_map.ravel()),
            "spatial_spearman_live": _spearman(s_map[live], e_map[live]), "live_fraction": float(live.mean())}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho, NaN when either sample is constant or has fewer than 3 values."""
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(sps.spearmanr(a, b).statistic)


def maps_figure(model: Any, items: Sequence[ImageItem], cfg: StudyConfig, out_png: str | Path) -> dict[str, Any]:
    """One row per image: original, reconstruction, error map, instability map over the image.

    Returns:
        ``{"figure", "images": [{key, mu_bar, spatial_spearman}], "median_spatial_spearman"}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not items:
        raise ValueError("maps_figure needs at least one image")
    fig, axes = plt.subplots(len(items), 4, figsize=(11, 2.8 * len(items)), squeeze=False)
    rows = []
    for ax, it in zip(axes, items):
        img = it.load()
        m = instability_map(model, img, record_key(it.key, it.content_hash or pixel_digest(img)), cfg)
        show = lambda t: ((t.clamp(-1, 1) + 1) / 2).mean(0).numpy()  # noqa: E731 - grey view
        ax[0].imshow(show(img), cmap="gray", vmin=0, vmax=1)
        ax[0].set_title(f"{it.key[:20]}", fontsize=8)
        ax[1].imshow(show(m["reconstruction"]), cmap="gray", vmin=0, vmax=1)
        ax[1].set_title("reconstruction", fontsize=8)
        im = ax[2].imshow(m["error_map"], cmap="magma")
        ax[2].set_title("|error| per pixel", fontsize=8)
        fig.colorbar(im, ax=ax[2], fraction=0.046)
        ax[3].imshow(show(img), cmap="gray", vmin=0, vmax=1)
        im = ax[3].imshow(m["instability_map"], cmap="viridis", alpha=0.6)
        ax[3].set_title(f"instability map (mu_bar {m['mu_bar']:.2f})\nrho = {m['spatial_spearman']:.2f}, "
                        f"unclamped pixels {m['spatial_spearman_live']:.2f}", fontsize=8)
        fig.colorbar(im, ax=ax[3], fraction=0.046)
        for a in ax:
            a.set_axis_off()
        rows.append({"key": it.key, "mu_bar": m["mu_bar"], "spatial_spearman": m["spatial_spearman"],
                     "spatial_spearman_live": m["spatial_spearman_live"]})
    out = save_png(fig, out_png)
    rhos = [r["spatial_spearman"] for r in rows if math.isfinite(r["spatial_spearman"])]
    return {"figure": str(out), "images": rows, "median_spatial_spearman": float(np.median(rhos)) if rhos else float("nan")}
