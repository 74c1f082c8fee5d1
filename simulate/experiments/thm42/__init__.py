"""Theorem 4.2: mixtures of Gaussian neighbours approximate a target density as m grows.

Owns: ``experiment``, ``figures``, ``judge``, ``options``, ``targets`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate thm42`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
