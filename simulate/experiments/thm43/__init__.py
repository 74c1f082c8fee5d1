"""Theorem 4.3 measured: where p1 -> 0, p2 -> 0 and P_inst -> 1 hold as n grows.

Owns: ``experiment``, ``figures``, ``geometry``, ``judge``, ``lln``, ``sequential`` (rounds of points at a cell's
largest n, merged per unit), ``trend`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate thm43`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
