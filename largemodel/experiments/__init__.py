"""The large-model experiments of the report, in the shape of ``simulate.experiments``.

Each experiment has a frozen ``<Exp>Options`` dataclass (validated on construction) with ``FAST``
(the report's ``--quick`` scale) and ``FULL`` (``--full``) and ``make_options(full, **overrides)``
(:func:`simulate.experiments.common.replace_options`); its measurements are resumable (the study's
and ``simulate.store.RecordStore``'s records); a judge turns them into
:class:`~simulate.verdict.Verdict` s; ``run`` measures, judges, draws and returns the result. The
report suites (``reports.largemodel_suite``, ``reports.explain_suite``, ``reports.failure_suite``, ``reports.learned_suite``; the guidance section in ``reports.largemodel_suite``)
only call ``run`` and render the result as table rows and Markdown.

Modules:

* :mod:`largemodel.experiments.trained` -- the models trained here (``ModelSpec``) and their
  held-out images as study items.
* :mod:`largemodel.experiments.fig4c.experiment` -- Fig. 4(c) / A1 on trained models (and the user's),
  Theorem 4.1 / 4.3 quantities by resolution, Lemma D.1 against the full Jacobian
  (``Fig4cOptions``, ``run``).
* :mod:`largemodel.experiments.fig4c.judge` -- the verdict on Fig. 4(c) (``judge``, the registry's
  decider) and the supplement verdicts on Theorem 4.3 and Lemma D.1.
* :mod:`largemodel.experiments.fig4c.figures` -- the Theorem 4.1 / 4.3 trend figure.
* :mod:`largemodel.experiments.explain.experiment` -- why images reconstruct badly (``ExplainOptions``,
  ``run``); :mod:`largemodel.experiments.explain.controls` -- its synthetic controls;
  :mod:`largemodel.experiments.explain.judge` -- its findings on intervals and supplement verdicts.
* :mod:`largemodel.experiments.failure.experiment` -- which images fail: one-pass scores against the
  reconstruction error (``FailureOptions``, ``run``); :mod:`largemodel.experiments.failure.measure`
  -- its records, timings and instability maps.
* :mod:`largemodel.experiments.learned_vs_exact.experiment` -- learned vs exact flows on known mixtures: small
  MLP velocity nets trained on box mixtures of the Theorem 4.3 geometry against the exact fields
  (``LearnedOptions``, ``run``); :mod:`largemodel.experiments.learned_vs_exact.judge` -- inherits / damps /
  exaggerates per regime, the claim's verdict and its control.
* :mod:`largemodel.experiments.guidance.experiment` -- guidance scale and prompt on the class-conditional digits
  model trained here (``GuidanceOptions``, ``run``); :mod:`largemodel.experiments.guidance.judge` -- does ``W``
  raise the error (sign test), and the same judge on the null prompt as its control.

Importing the package imports nothing heavy.
"""

from __future__ import annotations

__all__ = ["MODULES"]

#: the experiment modules (relative to this package)
MODULES: tuple[str, ...] = ("fig4c", "explain_study", "failure", "learned_vs_exact")
