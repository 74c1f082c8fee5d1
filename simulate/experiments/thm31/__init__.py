"""Theorem 3.1: Euler-inversion and reconstruction errors against their bounds.

Owns: ``experiment``, ``figures``, ``judge`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate thm31`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
