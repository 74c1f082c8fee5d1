"""Why images reconstruct badly, measured on the networks trained here (the report's explain section).

Owns: ``experiment`` (options, measurement, run), ``controls`` (synthetic fields run by the same code)
and ``judge`` (findings decided on intervals, on the model and on each control).
May import: everything in ``largemodel`` below ``experiments``, ``simulate``, ``theory``.
"""
