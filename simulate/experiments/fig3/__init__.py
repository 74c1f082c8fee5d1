"""Fig. 3 (Section 3.1): the 2-D generation map expands a region along the x-axis.

Owns: ``experiment``, ``figures``, ``judge``, ``measure``, ``options`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate fig3`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
