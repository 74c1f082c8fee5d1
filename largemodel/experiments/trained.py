"""The models the large-model experiments train here, and their held-out images as study items.

A model is a :data:`ModelSpec` ``(data, size, train images or None for all, training steps)``:
a small flow-matching transformer trained offline on ``data`` at ``size`` pixels
(``largemodel.training.train.cached_model``: shipped with the package for the quick scale, else trained
once, then cached). Its held-out images play
``p_r`` (docs/theory.md §10.4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ModelSpec", "check_spec", "trained_model", "heldout_items"]

ModelSpec = tuple[str, int, int | None, int]
"""``(data, size, train images or None for all, training steps)`` of a model trained here."""


def check_spec(spec: Any, name: str) -> ModelSpec:
    """``spec`` as a :data:`ModelSpec` tuple (``ValueError`` naming the option ``name`` otherwise)."""
    try:
        data, size, train_images, steps = spec
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (data, size, train images or None, training steps), got {spec!r}") from None
    if not isinstance(data, str) or int(size) < 1 or int(steps) < 1 or (train_images is not None and int(train_images) < 1):
        raise ValueError(f"{name} must be (data, size >= 1, train images >= 1 or None, steps >= 1), got {spec!r}")
    return (data, size, train_images, steps)


def trained_model(spec: ModelSpec) -> Path:
    """The folder of the model ``spec`` (trained now if the cache lacks it)."""
    from largemodel.training.train import cached_model

    data, size, train_images, steps = spec
    return cached_model(data, size, train_images, steps=steps, progress=False)


def heldout_items(folder: Path, n: int) -> list:
    """The first ``n`` held-out images of the model in ``folder`` as study items ``heldoutNNNN``."""
    from largemodel.study.items import ImageItem
    from largemodel.training.train import model_dataset

    held = model_dataset(folder).heldout[:n]
    return [ImageItem(f"heldout{i:04d}", (lambda i=i: held[i])) for i in range(held.shape[0])]
