"""Fig. 4(a, b) (Section 3.2): reconstruction error correlates with the instability coefficient.

Owns: ``experiment``, ``figures``, ``judge``, ``options``, ``pipeline`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate fig4`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
