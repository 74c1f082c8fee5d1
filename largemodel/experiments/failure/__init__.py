"""Which images fail: predicting bad reconstructions from one inversion pass (the report's section).

Owns: ``experiment`` (options, judge, run) and ``measure`` (per-image scores and errors).
May import: everything in ``largemodel`` below ``experiments``, ``simulate``, ``theory``.
"""
