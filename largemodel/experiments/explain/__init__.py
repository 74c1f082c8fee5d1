"""Why images reconstruct badly, measured on the networks trained here (the report's explain section).

Owns: ``experiment`` (options, measurement, run) and ``judge``.
May import: everything in ``largemodel`` below ``experiments``, ``simulate``, ``theory``.
"""
