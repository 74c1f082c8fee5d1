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

__all__ = ["ModelSpec", "HUTCHINSON_ROUTE", "check_spec", "trained_model", "heldout_items"]

ModelSpec = tuple[str, int, int | None, int]
"""``(data, size, train images or None for all, training steps)`` of a model trained here."""

#: the Jacobian route of the report's runs of the models trained here (on the CPU, no power iteration):
#: Hutchinson's ``e^T J_u e`` as ``e^T (J_u^T e)`` by reverse mode, the same scalar as forward mode's
#: ``e^T (J_u e)`` for the same probes up to rounding (docs/theory.md §9.4, §10.6), at about 0.4 of its CPU
#: time for these transformers (measured 2026-12-08: the guidance section's 24-image study, 13-16 CPU s
#: against 36-39). Route ``auto`` keeps forward mode on the CPU, where power iteration's ``J v`` is exact.
HUTCHINSON_ROUTE = "vjp-fd"


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


def heldout_items(folder: Path, n: int, *, captions: bool = False) -> list:
    """The first ``n`` held-out images of the model in ``folder`` as study items ``heldoutNNNN``; with
    ``captions`` each carries its label's class name as its prompt (``"digit 3"``,
    ``largemodel.training.classes.class_prompt``), as a caption file would give it.

    Raises:
        ValueError: ``captions`` for a dataset without labels.
    """
    from largemodel.study.items import ImageItem
    from largemodel.training.classes import class_prompt
    from largemodel.training.train import model_dataset

    data = model_dataset(folder)
    held = data.heldout[:n]
    if captions and data.labels_heldout is None:
        raise ValueError(f"{folder}: its {data.name} images have no class labels to caption them with")
    prompt = (lambda i: class_prompt(int(data.labels_heldout[i]))) if captions else (lambda i: None)  # noqa: E731
    return [ImageItem(f"heldout{i:04d}", (lambda i=i: held[i]), prompt=prompt(i)) for i in range(held.shape[0])]
