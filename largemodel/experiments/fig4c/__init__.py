"""Fig. 4(c) / A1 on the networks trained here, with Theorem 4.1 / 4.3 and Lemma D.1 on them.

Owns: ``experiment`` (options, measurement, run), ``judge`` (the verdicts), ``figures``.
May import: everything in ``largemodel`` below ``experiments``, ``simulate``, ``theory``.
"""
