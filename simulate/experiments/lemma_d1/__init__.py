"""Lemma D.1: Lambda_G by density ratio, divergence integral and slogdet.

Owns: ``experiment``, ``figures``, ``judge`` (the experiment shape: ``experiment`` holds options, ``compute_unit`` and ``run``;
``judge`` the verdicts; ``figures`` the PNGs). ``pfode simulate lemma-d1`` runs it.

May import: ``theory``, the ``simulate`` core, ``simulate.experiments.common`` / ``runner`` / ``oracles``.
"""
