"""Theorem 4.3 and what it is built from: the Steiner volume, chi-square tails, the bounds over n.

Owns: ``steiner`` (log Vol(C_l (+) B_r), docs/theory.md §8.2), ``chi2`` (log chi-square tails, §8.3),
``thm43`` (the p1 / p2 / P_inst bounds and their rates, §8), ``curves`` (the bounds for n = 1 .. 10^7,
``pfode theory curves``).

May import: the top-level ``theory`` modules (``_special``, ``_validate``, ``figures``, ``thm41``) and
``theory.output`` (the file writer).
"""
