"""Proposition 2.1 on the generation map: mu(s u) -> lambda(u), max mu >= ||J||_2 - eps.

Owns: ``experiment``, ``figures``, ``judge`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate prop21`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
