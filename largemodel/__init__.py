"""The paper's study on real diffusion transformers (diffusers SD3 / SD3.5 / FLUX and models trained here).

Mathematics and conventions: ``docs/theory.md`` §10 (sigma = 1 - t, ``u = -v``, null prompt, the
model's sigma grid) and §2.5 (``mu_bar`` with ``||D|| = eps_rms sqrt(n)``).

Modules:

* :mod:`largemodel.model` -- ``load_model``: a local diffusers folder loaded as a ``FlowModel``
  (offline, safetensors only; the null prompt encoded first, then cached).
* :mod:`largemodel.flow_model` -- ``FlowModel``: the velocity field ``u(x, sigma)`` of the PF-ODE
  (null prompt, no guidance, the model's sigma grid); ``math_attention``, ``jvp_reductions``.
* :mod:`largemodel.folder` -- reading and writing model folders, offline, safetensors only.
* :mod:`largemodel.ode` -- Euler / Heun / diffusers-Heun regeneration ``G`` and inversion ``F~``
  on the model's sigma grid.
* :mod:`largemodel.exact_inversion` -- the exact discrete inverse ``G_N^{-1}`` by per-step fixed
  points.
* :mod:`largemodel.instability` -- ``mu_bar``, ``lambda_G`` (JVP or central differences),
  ``||J_G||_2`` by power iteration, ``log Lambda_G`` in one inversion pass (Lemma D.1).
* :mod:`largemodel.study` -- the resumable reconstruction-instability study (Fig. 4c, A1, App. F).
* :mod:`largemodel.study_config` -- ``StudyConfig``: the study's frozen, validated parameters.
* :mod:`largemodel.study_items` -- study images and records: content keys, file names, reading
  records back.
* :mod:`largemodel.images` -- images from a local folder: listing, seeded subsets, loading.
* :mod:`largemodel.stats` -- Pearson / Spearman with bootstrap (BCa) intervals, log-log fits.
* :mod:`largemodel.explain` -- why an image reconstructs badly: discrepancy x amplification,
  alignment, causal test, inverters at equal cost.
* :mod:`largemodel.explain_cli` -- ``pfode largemodel explain``: the explanation per image and
  resolution, resumable.
* :mod:`largemodel.explain_plots` -- figures of ``pfode largemodel explain``.
* :mod:`largemodel.maps` -- per-pixel instability maps: where the regeneration amplifies
  perturbations.
* :mod:`largemodel.scores` -- failure scores from the inversion pass alone, and their costs.
* :mod:`largemodel.predict` -- how well a score predicts the worst reconstructions (AUROC, AP).
* :mod:`largemodel.rank` -- ``pfode largemodel rank``: a folder of images ranked by predicted risk.
* :mod:`largemodel.plan` -- cost plan of a study (FLOPs, time, peak memory per estimator).
* :mod:`largemodel.plan_arch` -- what the plan's cost depends on: architectures, token counts,
  forward FLOPs.
* :mod:`largemodel.plan_memory` -- the plan's memory model (measured activation peaks, scaled).
* :mod:`largemodel.plots` -- figures of the study (scatter, multi-model panels, failure gallery).
* :mod:`largemodel.train` -- small flow-matching transformers trained offline, cached.
* :mod:`largemodel.train_options` -- a training run's configuration: defaults, validation, key.
* :mod:`largemodel.train_objective` -- the conditional flow-matching loss and the null prompt.
* :mod:`largemodel.model_cache` -- the model cache, training checkpoints, finished model folders.
* :mod:`largemodel.train_cli` -- ``pfode largemodel train``.
* :mod:`largemodel.data` -- offline training datasets (digits, faces, photo patches).
* :mod:`largemodel.quality` -- sample quality of a trained model, measured.
* :mod:`largemodel.tiny` -- tiny random SD3 / SD3.5 / FLUX folders from configs (tests).
* :mod:`largemodel.fullsize` -- the full-size SD3.5 Medium transformer with random weights
  (benchmarks, GPU tests).
* :mod:`largemodel.transformer_configs` -- transformers built from configs (``build_transformer``,
  ``count_parameters``), the configs kept in the repository.
* :mod:`largemodel.cli` -- the ``pfode largemodel`` sub-commands (study, gallery, train, ...).
* :mod:`largemodel.experiments` -- the report's large-model experiments (Fig. 4(c) on trained models,
  why images reconstruct badly, which images fail): options, measurement, judge, figures.
* :mod:`largemodel.pytest_plugin` -- the opt-in ``pfode`` pytest plugin: fixtures for testing
  your code against the paper's results.

Importing the package imports nothing heavy (no torch, no diffusers): submodules and the names in
``__all__`` are loaded on first access.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

#: public names, each loaded lazily from its module
_EXPORTS: dict[str, str] = {
    "FlowModel": "flow_model",
    "load_model": "model",
    "StudyConfig": "study_config",
    "run_study": "study",
    "summarize": "study",
    "correlate": "stats",
}

#: submodules reachable as attributes (``largemodel.ode``) without an explicit import
_SUBMODULES: tuple[str, ...] = (
    "cli",
    "data",
    "exact_inversion",
    "explain",
    "explain_cli",
    "explain_plots",
    "experiments",
    "flow_model",
    "folder",
    "fullsize",
    "images",
    "instability",
    "maps",
    "model",
    "model_cache",
    "ode",
    "plan",
    "plan_arch",
    "plan_memory",
    "plots",
    "predict",
    "pytest_plugin",
    "quality",
    "rank",
    "scores",
    "stats",
    "study",
    "study_items",
    "study_config",
    "tiny",
    "train",
    "train_cli",
    "train_objective",
    "train_options",
    "transformer_configs",
)

__all__ = [*_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES or (not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}")):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
