r"""Sample quality of a trained model, measured.

- ``sample``: Euler on the model's own sigma grid ``s_0 = 1 > s_1 > ... > s_N = 0``:
  ``x_{i+1} = x_i + (s_{i+1} - s_i) u(x_i, s_i)`` from ``x_0 ~ N(0, I)``.
- ``digit_classifier``: a multinomial logistic regression on the training digits (the model's
  own training split, at its resolution); ``quality_report`` gives its mean max-class
  probability ("confidence") on model samples, on noise images (``N(0, I)`` clamped to
  ``[-1, 1]``, the sampler's start point as an image) and on held-out real digits, its accuracy
  on the held-out digits, and the class histogram of the samples (mode coverage).
- for every dataset: root-mean-square pixel distance from each sample to its nearest training
  image, next to the same for held-out real images (samples much nearer to the training set
  than held-out images are memorised copies), pixel mean / std, and a PNG grid of samples next
  to held-out real images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from theory.figures import save_png

from largemodel.models.folder import PFODE_META_FILE

__all__ = ["digit_classifier", "image_grid", "nearest_rms", "quality_report", "sample", "save_sample_figure"]


@torch.no_grad()
def sample(model: Any, k: int, steps: int, seed: int, *, batch_size: int = 256) -> Tensor:
    """``k`` samples of ``model`` by Euler on ``model.sigmas(steps)``, from ``N(0, I)`` at sigma 1.

    Args:
        model: a ``FlowModel`` (``velocity``, ``sigmas``, ``latent_shape``, ``state_dtype``).
        k: number of samples.
        steps: Euler steps.
        seed: seed of the initial noise (CPU generator, so equal on every device).
        batch_size: samples per network call.

    Returns:
        ``(k, C, H, W)`` final states at sigma 0 (latents; for pixel-space models the images,
        not clamped) in ``model.state_dtype`` on the CPU.

    Raises:
        ValueError: ``k``, ``steps`` or ``batch_size`` not a positive integer.
    """
    for name, v in (("k", k), ("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(k, *model.latent_shape(), generator=gen, dtype=torch.float32).to(model.state_dtype)
    sig = model.sigmas(steps).to(model.state_dtype)
    out = []
    for chunk in z.split(batch_size):
        x = chunk.to(model.device)
        for i in range(steps):
            x = x + (sig[i + 1] - sig[i]).to(model.device) * model.velocity(x, sig[i])
        out.append(x.cpu())
    return torch.cat(out)


def _flat(images: Tensor) -> np.ndarray:
    return images.reshape(images.shape[0], -1).to(torch.float64).cpu().numpy()


def digit_classifier(images: Tensor, labels: Tensor, *, seed: int = 0) -> Any:
    """Multinomial logistic regression (``C = 1``) on flattened ``(K, 1, S, S)`` digits."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=3000, random_state=seed)
    clf.fit(_flat(images), labels.cpu().numpy())
    return clf


def nearest_rms(queries: Tensor, references: Tensor, *, chunk: int = 512) -> Tensor:
    """For each query, ``min_j sqrt(mean((q - r_j)^2))`` over the references: ``(Q,)``."""
    q, r = queries.reshape(len(queries), -1).double(), references.reshape(len(references), -1).double()
    n = q.shape[1]
    best = [torch.cdist(part, r).min(dim=1).values for part in q.split(chunk)]
    return torch.cat(best) / math.sqrt(n)


def image_grid(images: Tensor, columns: int, pad: int = 1) -> np.ndarray:
    """Tile ``(K, C, S, S)`` images in ``[-1, 1]`` into an ``(H, W, 3)`` array in ``[0, 1]``."""
    k, c, s, _ = images.shape
    rows = max(1, math.ceil(k / columns))
    grid = np.ones((rows * (s + pad) + pad, columns * (s + pad) + pad, 3))
    imgs = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    if c == 1:
        imgs = np.repeat(imgs, 3, axis=3)
    for i in range(k):
        r, col = divmod(i, columns)
        y, x = pad + r * (s + pad), pad + col * (s + pad)
        grid[y:y + s, x:x + s] = imgs[i]
    return grid


def save_sample_figure(samples: Tensor, real: Tensor | None, out_png: str | Path, *, title: str = "",
                       count: int = 64) -> Path:
    """PNG: a grid of (up to ``count``) samples, beside a grid of real images if given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [("model samples", samples[:count])]
    if real is not None and len(real):
        panels.append(("held-out real images", real[:count]))
    cols = int(math.ceil(math.sqrt(min(count, max(len(p[1]) for p in panels)))))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], panels):
        ax.imshow(image_grid(imgs, cols), interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, out_png, dpi=120)


def _confidences(clf: Any, images: Tensor) -> np.ndarray:
    return clf.predict_proba(_flat(images)).max(axis=1)


def _digit_scores(samples: Tensor, dataset: Any, seed: int) -> dict[str, Any]:
    """Classifier confidence on samples / noise / held-out digits, accuracy, class histogram."""
    clf = digit_classifier(dataset.train, dataset.labels_train, seed=seed)
    gen = torch.Generator().manual_seed(seed + 7)
    noise = torch.randn(samples.shape, generator=gen).clamp(-1, 1)
    held = dataset.heldout
    pred = clf.predict(_flat(samples))
    return {
        "confidence_samples": float(_confidences(clf, samples).mean()),
        "confidence_noise": float(_confidences(clf, noise).mean()),
        "confidence_heldout": float(_confidences(clf, held).mean()) if len(held) else float("nan"),
        "classifier_heldout_accuracy": float((clf.predict(_flat(held)) == dataset.labels_heldout.numpy()).mean())
        if len(held) else float("nan"),
        "sample_class_histogram": [int(c) for c in np.bincount(pred, minlength=10)],
    }


def quality_report(model_dir: str | Path, *, n_samples: int = 256, steps: int = 50, seed: int = 0,
                   out_png: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Sample ``n_samples`` images from a model trained here and measure them.

    Args:
        model_dir: a folder written by ``train_model`` (its ``pfode_model.json`` names the data
            and the held-out split).
        n_samples: number of samples.
        steps: Euler steps of the sampler.
        seed: seed of the samples (and of the classifier and the noise images).
        out_png: where to write the sample figure (``None``: no figure).
        device: where the network runs.

    Returns:
        A JSON-serialisable dict: ``data``, ``n_samples``, ``steps``, ``nn_rms_samples_to_train``
        and ``nn_rms_heldout_to_train`` (means of ``nearest_rms``), ``pixel_mean`` /
        ``pixel_std`` of samples and held-out images, for ``digits`` the classifier numbers
        (see the module docstring), ``png`` and ``summary`` (lines of text).

    Raises:
        ValueError: not a model trained here, or a bad ``n_samples`` / ``steps``.
    """
    from largemodel.models.load import load_model
    from largemodel.training.cache import model_dataset

    dataset = model_dataset(model_dir)
    meta = json.loads((Path(model_dir) / PFODE_META_FILE).read_text())
    model = load_model(model_dir, device=device, dtype="float32")
    samples = model.decode(sample(model, n_samples, steps, seed)).cpu()
    held, train = dataset.heldout, dataset.train
    report: dict[str, Any] = {
        "data": dataset.name,
        "resolution": dataset.size,
        "n_samples": n_samples,
        "steps": steps,
        "nn_rms_samples_to_train": float(nearest_rms(samples, train).mean()),
        "nn_rms_heldout_to_train": float(nearest_rms(held, train).mean()) if len(held) else float("nan"),
        "pixel_mean_samples": float(samples.mean()),
        "pixel_std_samples": float(samples.std()),
        "pixel_mean_heldout": float(held.mean()) if len(held) else float("nan"),
        "pixel_std_heldout": float(held.std()) if len(held) else float("nan"),
    }
    if dataset.name == "digits":
        report.update(_digit_scores(samples, dataset, seed))
    report["summary"] = _summary(report)
    if out_png is not None:
        title = (f"{dataset.name} {dataset.size}px, {meta.get('steps')} training steps, "
                 f"final loss {meta.get('final_loss', float('nan')):.4f}, {steps} Euler steps")
        report["png"] = str(save_sample_figure(samples, held, out_png, title=title))
    return report


def _summary(r: dict[str, Any]) -> list[str]:
    lines = [
        f"nearest-training-image RMS distance: samples {r['nn_rms_samples_to_train']:.3f}, "
        f"held-out real {r['nn_rms_heldout_to_train']:.3f}",
        f"pixel mean/std: samples {r['pixel_mean_samples']:.3f}/{r['pixel_std_samples']:.3f}, "
        f"held-out {r['pixel_mean_heldout']:.3f}/{r['pixel_std_heldout']:.3f}",
    ]
    if "confidence_samples" in r:
        lines.insert(0, (
            f"digit classifier confidence: samples {r['confidence_samples']:.3f}, noise {r['confidence_noise']:.3f}, "
            f"held-out real {r['confidence_heldout']:.3f} (held-out accuracy {r['classifier_heldout_accuracy']:.3f})"
        ))
        lines.insert(1, f"sample classes 0-9: {r['sample_class_histogram']}")
    return lines
