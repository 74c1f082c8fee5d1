"""Theorem 4.1: P_inst(tau) >= 1 - p1 - p2 by Monte Carlo.

Owns: ``experiment``, ``figures``, ``judge`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate thm41`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
