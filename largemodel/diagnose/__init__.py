"""Which images reconstruct badly, and why: scores, ranking, maps, exact inversion, explanations.

Owns: ``scores`` (failure scores from one inversion pass, and their costs), ``predict`` (AUROC / AP of a
score), ``rank`` (``pfode largemodel rank``), ``args`` (the flags of ``rank`` and ``explain``, torch-free), ``score_names``, ``maps`` (per-pixel instability maps), ``exact_inversion``
(``G_N^{-1}`` by per-step fixed points), ``explain`` / ``explain_summary`` / ``explain_cli`` /
``explain_plots`` (``pfode largemodel explain``: discrepancy x amplification, linearization at the real
discrepancy, inverters at equal cost with G_N's floor; statistics with intervals, identities apart).

May import: ``theory``, ``simulate``, ``largemodel.models``, ``largemodel.study``, ``largemodel.plan``.
"""
