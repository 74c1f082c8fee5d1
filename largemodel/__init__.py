"""The paper's study on real diffusion transformers (diffusers SD3 / SD3.5 / FLUX and models trained here).

Mathematics and conventions: ``docs/theory.md`` §10 (sigma = 1 - t, ``u = -v``, null prompt, the
model's sigma grid) and §2.5 (``mu_bar`` with ``||D|| = eps_rms sqrt(n)``).

Modules:

* :mod:`largemodel.models.load` -- ``load_model``: a local diffusers folder loaded as a ``FlowModel``
  (offline, safetensors only; prompts, the null prompt among them, encoded first, then cached).
* :mod:`largemodel.models.flow_model` -- ``FlowModel``: the velocity field ``u(x, sigma)`` of the PF-ODE
  (a prompt, classifier-free guidance, the model's sigma grid); ``math_attention``, ``jvp_reductions``.
* :mod:`largemodel.models.conditioning` -- ``Conditioning``: prompt embeddings, the unconditional ones,
  the guidance scale ``W`` (docs/theory.md §10.7).
* :mod:`largemodel.models.pipeline` -- ``from_pipeline``: a diffusers pipeline object already in memory
  (a notebook's ``pipe``) as the same ``FlowModel``, its modules used as they are.
* :mod:`largemodel.models.prompts` -- prompt embeddings: each prompt encoded once by the folder's text
  encoders before the transformer loads, cached on the prompt and the encoders' files.
* :mod:`largemodel.models.folder` -- reading and writing model folders, offline, safetensors only.
* :mod:`largemodel.study.ode` -- Euler / Heun / diffusers-Heun regeneration ``G`` and inversion ``F~``
  on the model's sigma grid.
* :mod:`largemodel.diagnose.exact_inversion` -- the exact discrete inverse ``G_N^{-1}`` by per-step fixed
  points.
* :mod:`largemodel.study.instability` -- ``mu_bar``, ``lambda_G`` (JVP or central differences),
  ``||J_G||_2`` by power iteration, ``log Lambda_G`` in one inversion pass (Lemma D.1).
* :mod:`largemodel.study.runner` -- the resumable reconstruction-instability study (Fig. 4c, A1, App. F).
* :mod:`largemodel.study.config` -- ``StudyConfig``: the study's frozen, validated parameters.
* :mod:`largemodel.study.items` -- study images and records: content keys, file names, reading
  records back.
* :mod:`largemodel.models.images` -- images from a local folder: listing, seeded subsets, loading.
* :mod:`largemodel.study.stats` -- Pearson / Spearman with bootstrap (BCa) intervals, log-log fits.
* :mod:`largemodel.diagnose.explain` -- why an image reconstructs badly: discrepancy x amplification,
  linearization at the real discrepancy, alignment, differentiability check, inverters at equal cost
  with G_N's floor.
* :mod:`largemodel.diagnose.explain_summary` -- the explanation's across-image statistics with
  bootstrap intervals, its identities kept apart from its findings.
* :mod:`largemodel.diagnose.explain_cli` -- ``pfode largemodel explain``: the explanation per image and
  resolution, resumable.
* :mod:`largemodel.diagnose.explain_plots` -- figures of ``pfode largemodel explain``.
* :mod:`largemodel.diagnose.maps` -- per-pixel instability maps: where the regeneration amplifies
  perturbations.
* :mod:`largemodel.diagnose.scores` -- failure scores from the inversion pass alone, and their costs.
* :mod:`largemodel.diagnose.predict` -- how well a score predicts the worst reconstructions (AUROC, AP).
* :mod:`largemodel.diagnose.rank` -- ``pfode largemodel rank``: a folder of images ranked by predicted risk.
* :mod:`largemodel.plan.cost` -- cost plan of a run (rows, FLOPs, time, peak memory per phase).
* :mod:`largemodel.plan.commands` -- the plans and pre-run checks of ``study``, ``explain`` and ``rank``.
* :mod:`largemodel.plan.encoders` -- the text encoders' phase of a plan.
* :mod:`largemodel.study.jacobian` -- Jacobian products by two routes: forward-mode AD on the math
  attention kernel, or reverse mode and finite differences on the fused kernels.
* :mod:`largemodel.models.routes` -- ``--jacobian-route``, ``--fd-scheme`` and the finite-difference steps (torch-free).
* :mod:`largemodel.plan.arch` -- what the plan's cost depends on: architectures, token counts,
  forward FLOPs.
* :mod:`largemodel.plan.memory` -- the plan's memory model (measured activation peaks, scaled).
* :mod:`largemodel.study.plots` -- figures of the study (scatter, multi-model panels, failure gallery).
* :mod:`largemodel.training.train` -- small flow-matching transformers trained offline, cached.
* :mod:`largemodel.training.options` -- a training run's configuration: defaults, validation, key.
* :mod:`largemodel.training.objective` -- the conditional flow-matching loss and the null prompt.
* :mod:`largemodel.training.cache` -- the model cache, training checkpoints, finished model folders.
* :mod:`largemodel.training.cli` -- ``pfode largemodel train``.
* :mod:`largemodel.training.data` -- offline training datasets (digits, faces, photo patches).
* :mod:`largemodel.training.quality` -- sample quality of a trained model, measured.
* :mod:`largemodel.models.tiny` -- tiny random SD3 / SD3.5 / FLUX folders from configs (tests).
* :mod:`largemodel.models.fullsize` -- the full-size SD3.5 Medium transformer with random weights
  (benchmarks, GPU tests).
* :mod:`largemodel.models.transformer_configs` -- transformers built from configs (``build_transformer``,
  ``count_parameters``), the configs kept in the repository.
* :mod:`largemodel.cli` -- the ``pfode largemodel`` sub-commands (study, gallery, train, ...).
* :mod:`largemodel.experiments` -- the report's large-model experiments (Fig. 4(c) on trained models,
  why images reconstruct badly, which images fail): options, measurement, judge, figures.
* :mod:`largemodel.pytest_plugin` -- the opt-in ``pfode`` pytest plugin: fixtures for testing
  your code against the paper's results (the fixtures themselves in :mod:`largemodel.pytest_fixtures`).

Importing the package imports nothing heavy (no torch, no diffusers): submodules and the names in
``__all__`` are loaded on first access (:mod:`theory._lazy`, the loader all four packages share).

Threads: the library leaves torch's thread count as it is (torch's default: one per core). On a
machine whose cores other processes share, call ``simulate.set_threads(1)`` or set
``PFODE_THREADS=1`` (applied on the first use of a name in ``__all__``, e.g. ``largemodel.load_model``);
the ``pfode`` command line runs with one thread (``--threads``).
"""

from __future__ import annotations

from theory._lazy import lazy_package

#: public names, each loaded lazily from its module
_EXPORTS: dict[str, str] = {
    "FlowModel": "models.flow_model",
    "load_model": "models.load",
    "from_pipeline": "models.pipeline",
    "StudyConfig": "study.config",
    "run_study": "study.runner",
    "summarize": "study.runner",
    "correlate": "study.stats",
}

#: submodules reachable as attributes (``largemodel.study.ode``) without an explicit import
_SUBMODULES: tuple[str, ...] = (
    "cli",
    "diagnose",
    "experiments",
    "models",
    "plan",
    "pytest_fixtures",
    "pytest_plugin",
    "study",
    "training",
)

def _apply_threads() -> None:
    from simulate.threads import apply_env

    apply_env()  # PFODE_THREADS, if set (simulate.threads)


__all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS, _SUBMODULES, on_first_use=_apply_threads)
